"""Settling many holds in one transaction (job sync finalises thousands per tick), and
bulk_set / bulk_insert, one statement writing per-row values to many rows (used by jobs' sync
and forwarding too).

Each hold is settled exactly as ledger_settle would (same entries, same keys, same counter
effects, expiry of what is released on an expired allocation, thresholds after charges), but
with a fixed number of statements per batch: one row lock per hold and per allocation, one
UPDATE of the holds, one INSERT of the entries and one counter update per allocation, all from
plain values (no model instance per hold or entry).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, cast

from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import User
from quotas.models import ZERO, Allocation, Hold, LedgerEntry
from quotas.services.ledger import _EFFECTS, _actual, _after_charge, _move_counters, _settle_parts

_BATCH = 5000
# Values of these fields need no preparation: str (or a TextChoices member), int, Decimal, UUID
# and aware datetimes are written into the array literal as they are.
_PLAIN_FIELDS = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.DecimalField,
    models.DateTimeField,
    models.UUIDField,
    models.ForeignKey,
    models.AutoField,
)


def _columns(model: type[models.Model], fields: Sequence[str]) -> list[models.Field[Any, Any]]:
    return [cast("models.Field[Any, Any]", model._meta.get_field(name)) for name in fields]


# Columns whose values are written bare (str() of an int or Decimal); every other value is
# quoted.
_NUMERIC_FIELDS = (models.IntegerField, models.DecimalField, models.ForeignKey, models.AutoField)


def _literal(values: list[Any], *, numeric: bool) -> str:
    """A PostgreSQL array literal of the values. Numbers go bare; everything else (str, UUID,
    aware datetime in ISO 8601 with its offset, bool as True/False) is double-quoted with
    backslash escapes, the array input syntax's own quoting, so any text arrives unchanged."""
    if numeric:
        items = ["NULL" if v is None else str(v) for v in values]
    else:
        items = [
            "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in values
        ]
    return "{" + ",".join(items) + "}"


def _array(column: models.Field[Any, Any], values: list[Any]) -> tuple[str, str]:
    """The values as ONE array literal (a single text parameter) and the SQL array type to cast
    it to: much cheaper than letting the driver adapt a list element by element, which was a
    good part of a sync tick's time at 200,000 jobs."""
    if isinstance(column, models.JSONField):
        values = [None if v is None else json.dumps(v, cls=column.encoder) for v in values]
        return _literal(values, numeric=False), "text[]"
    if not isinstance(column, _PLAIN_FIELDS):
        values = [v if v is None else column.get_db_prep_save(v, connection) for v in values]
    numeric = isinstance(column, _NUMERIC_FIELDS)
    return _literal(values, numeric=numeric), f"{column.db_type(connection)}[]"


def _by_attname(model: type[models.Model], values: Mapping[str, Any]) -> dict[str, Any]:
    columns = _columns(model, list(values))
    return {c.attname: v for c, v in zip(columns, values.values(), strict=True)}


def _bulk_set_portable(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    constants: Mapping[str, Any],
) -> None:
    """bulk_set through Django's bulk_update (any database; the SQLite default)."""
    columns = _columns(model, fields)
    fixed = _by_attname(model, constants)
    objects = [
        model(pk=row[0], **{c.attname: v for c, v in zip(columns, row[1:], strict=True)}, **fixed)
        for row in rows
    ]
    names = [c.name for c in columns + _columns(model, list(constants))]
    model._default_manager.bulk_update(objects, names, batch_size=500)


def _bulk_insert_portable(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    constants: Mapping[str, Any],
) -> None:
    """bulk_insert through Django's bulk_create (any database; the SQLite default)."""
    columns = _columns(model, fields)
    fixed = _by_attname(model, constants)
    model._default_manager.bulk_create(
        [
            model(**{c.attname: v for c, v in zip(columns, row, strict=True)}, **fixed)
            for row in rows
        ],
        batch_size=1000,
    )


def _constant_params(
    model: type[models.Model], constants: Mapping[str, Any]
) -> tuple[list[str], list[str], list[Any]]:
    """(quoted column names, placeholders, parameters) of the values every row shares."""
    qn = connection.ops.quote_name
    names, placeholders, params = [], [], []
    for column, value in zip(_columns(model, list(constants)), constants.values(), strict=True):
        names.append(qn(str(column.column)))
        if isinstance(column, models.JSONField):
            placeholders.append("%s::jsonb")
            params.append(None if value is None else json.dumps(value, cls=column.encoder))
        else:
            placeholders.append(f"%s::{column.db_type(connection)}")
            params.append(value if value is None else column.get_db_prep_save(value, connection))
    return names, placeholders, params


def bulk_set(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Set `fields` on many rows; each row is (pk, value of fields[0], value of fields[1], ...),
    and every row's fields in `constants` to the same value. A foreign key is named by its
    field or column name (`job` or `job_id`) and given the id.

    On PostgreSQL: one UPDATE ... FROM UNNEST(array literals) per 5,000 rows; elsewhere (the
    SQLite development default) Django's bulk_update.
    """
    constants = constants or {}
    if not rows:
        return
    if connection.vendor != "postgresql":
        _bulk_set_portable(model, fields, rows, constants)
        return
    qn = connection.ops.quote_name
    columns = _columns(model, fields)
    pk_column = str(cast("models.Field[Any, Any]", model._meta.pk).column)
    fixed_names, fixed_placeholders, fixed_params = _constant_params(model, constants)
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        params: list[Any] = [*fixed_params, _literal([row[0] for row in batch], numeric=True)]
        types = ["bigint[]"]
        sets = [f"{n} = {p}" for n, p in zip(fixed_names, fixed_placeholders, strict=True)]
        for i, column in enumerate(columns, start=1):
            values, sql_type = _array(column, [row[i] for row in batch])
            params.append(values)
            types.append(sql_type)
            name = qn(str(column.column))
            cast_to = "::jsonb" if isinstance(column, models.JSONField) else ""
            sets.append(f"{name} = v.{name}{cast_to}")
        names = ", ".join(["_pk", *(qn(str(c.column)) for c in columns)])
        arrays = ", ".join(f"%s::{t}" for t in types)
        sql = (
            f"UPDATE {qn(model._meta.db_table)} AS t SET {', '.join(sets)} "  # noqa: S608 (names from model meta)
            f"FROM UNNEST({arrays}) AS v({names}) WHERE t.{qn(pk_column)} = v._pk"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def bulk_insert(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Insert many rows of plain values (no model instances), each row's fields in `constants`
    set to the same value: INSERT ... SELECT FROM UNNEST(array literals) on PostgreSQL,
    bulk_create elsewhere."""
    constants = constants or {}
    if not rows:
        return
    if connection.vendor != "postgresql":
        _bulk_insert_portable(model, fields, rows, constants)
        return
    qn = connection.ops.quote_name
    columns = _columns(model, fields)
    if any(isinstance(c, models.JSONField) for c in columns):
        raise TypeError("bulk_insert does not take JSON columns")
    fixed_names, fixed_placeholders, fixed_params = _constant_params(model, constants)
    names = [*(qn(str(c.column)) for c in columns), *fixed_names]
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        params: list[Any] = []
        arrays = []
        for i, column in enumerate(columns):
            values, sql_type = _array(column, [row[i] for row in batch])
            params.append(values)
            arrays.append(f"%s::{sql_type}")
        sql = (
            f"INSERT INTO {qn(model._meta.db_table)} ({', '.join(names)}) "  # noqa: S608 (names from model meta)
            f"SELECT v.*{''.join(', ' + p for p in fixed_placeholders)} "
            f"FROM UNNEST({', '.join(arrays)}) AS v"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, fixed_params + params)


class SettledHold(NamedTuple):
    """A hold as ledger_settle_many leaves it (settled now or before)."""

    pk: int
    allocation_id: int
    charged: Decimal
    released: Decimal


# The columns of the entries ledger_settle_many inserts, one tuple per entry (actor and
# created_at are the same for the whole batch).
_ENTRY_FIELDS = (
    "allocation_id",
    "kind",
    "amount",
    "memo",
    "cluster_id",
    "hold_id",
    "job_uuid",
    "idempotency_key",
)


@transaction.atomic
def ledger_settle_many(
    *, actor: User | None, settlements: Sequence[tuple[Hold | int, Decimal]], memo: str = ""
) -> dict[int, SettledHold]:
    """Charge min(actual, held) out of each hold (a Hold or its pk) and release the rest, each
    exactly once. Returns {hold pk: the hold as settled}; holds settled before come back as
    they were. A fixed number of statements whatever the number of holds.
    """
    actuals: dict[int, Decimal] = {}
    for hold, actual in settlements:
        actuals[hold if isinstance(hold, int) else hold.pk] = _actual(actual)
    if not actuals:
        return {}
    # The same locks as ledger_settle, taken in one consistent order (holds by pk, then
    # allocations by ends_at, id) so concurrent batches never deadlock. A hold already settled
    # (by another sync, a cancel) is seen here under its lock and left alone.
    rows = list(
        Hold.objects.select_for_update(no_key=True)
        .filter(pk__in=list(actuals))
        .order_by("pk")
        .values_list(
            "pk", "allocation_id", "state", "amount", "charged", "released", "cluster_id",
            "job_uuid", "key",
        )
    )  # fmt: skip
    settled: dict[int, SettledHold] = {}
    to_settle = []
    for row in rows:
        if row[2] == Hold.State.SETTLED:
            settled[row[0]] = SettledHold(row[0], row[1], row[4], row[5])
        else:
            to_settle.append(row)
    if not to_settle:
        return settled
    allocations = list(
        Allocation.objects.select_for_update(no_key=True)
        .filter(pk__in={row[1] for row in to_settle})
        .order_by("ends_at", "id")
    )
    expired = {a.pk for a in allocations if a.status == Allocation.Status.EXPIRED}
    deltas = {a.pk: [ZERO, ZERO, ZERO] for a in allocations}
    charged_on: set[int] = set()
    holds: list[tuple[int, Decimal, Decimal]] = []
    entries: list[tuple[Any, ...]] = []
    for pk, allocation_id, _, amount, _, _, cluster_id, job_uuid, key in to_settle:
        charge, release, parts = _settle_parts(
            amount, actuals[pk], expired=allocation_id in expired, memo=memo
        )
        delta = deltas[allocation_id]
        for kind, value, text in parts:
            entries.append(
                (allocation_id, kind, value, text, cluster_id, pk, job_uuid, f"{key}:{kind}")
            )
            for i, factor in enumerate(_EFFECTS[kind]):
                delta[i] += factor * value
        if charge > 0:
            charged_on.add(allocation_id)
        holds.append((pk, charge, release))
        settled[pk] = SettledHold(pk, allocation_id, charge, release)
    now = timezone.now()
    bulk_set(
        Hold,
        ("charged", "released"),
        holds,
        constants={"state": Hold.State.SETTLED, "settled_at": now},
    )
    bulk_insert(
        LedgerEntry,
        _ENTRY_FIELDS,
        entries,
        constants={"actor_id": actor.pk if actor is not None else None, "created_at": now},
    )
    for allocation in allocations:
        _move_counters(allocation, *deltas[allocation.pk], actor=actor)
    for allocation in allocations:
        if allocation.pk in charged_on:
            _after_charge(allocation)
    return settled
