"""Settling many holds in one transaction (job sync finalises thousands per tick), and
bulk_set, one statement setting per-row values on many rows (used by jobs' sync too).

Each hold is settled exactly as ledger_settle would (same entries, same keys, same counter
effects, expiry of what is released on an expired allocation, thresholds after charges), but
with one row lock and one counter update per allocation instead of several per hold.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, cast

from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import User
from quotas.models import Allocation, Hold, LedgerEntry
from quotas.services.ledger import _actual, _after_charge, _post_many, _settlement

_BATCH = 5000
# Values of these fields need no preparation: str, int, Decimal and aware datetimes.
_PLAIN_FIELDS = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.DecimalField,
    models.DateTimeField,
    models.ForeignKey,
    models.AutoField,
)


def _columns(model: type[models.Model], fields: Sequence[str]) -> list[models.Field[Any, Any]]:
    return [cast("models.Field[Any, Any]", model._meta.get_field(name)) for name in fields]


def _array(column: models.Field[Any, Any], values: list[Any]) -> tuple[list[Any], str]:
    """Values prepared for the database and the SQL array type they travel as."""
    if isinstance(column, models.JSONField):
        return (
            [None if v is None else json.dumps(v, cls=column.encoder) for v in values],
            "text[]",
        )
    if isinstance(column, _PLAIN_FIELDS):
        return values, f"{column.db_type(connection)}[]"  # psycopg adapts these as they are
    return (
        [column.get_db_prep_save(v, connection) for v in values],
        f"{column.db_type(connection)}[]",
    )


def _bulk_set_portable(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """bulk_set through Django's bulk_update (any database; the SQLite default)."""
    columns = _columns(model, fields)
    objects = [
        model(pk=row[0], **{c.attname: v for c, v in zip(columns, row[1:], strict=True)})
        for row in rows
    ]
    model._default_manager.bulk_update(objects, [c.name for c in columns], batch_size=500)


def _bulk_insert_portable(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """bulk_insert through Django's bulk_create (any database; the SQLite default)."""
    columns = _columns(model, fields)
    model._default_manager.bulk_create(
        [model(**{c.attname: v for c, v in zip(columns, row, strict=True)}) for row in rows],
        batch_size=1000,
    )


def bulk_set(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Set `fields` on many rows; each row is (pk, value of fields[0], value of fields[1], ...).
    A foreign key is named by its field or column name (`job` or `job_id`) and given the id.

    On PostgreSQL: one UPDATE ... FROM UNNEST(arrays) per 5,000 rows; elsewhere (the SQLite
    development default) Django's bulk_update.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        _bulk_set_portable(model, fields, rows)
        return
    qn = connection.ops.quote_name
    columns = _columns(model, fields)
    pk_column = str(cast("models.Field[Any, Any]", model._meta.pk).column)
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        params: list[Any] = [[row[0] for row in batch]]
        types = ["bigint[]"]
        sets = []
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
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows of plain values (no model instances): INSERT ... SELECT FROM UNNEST on
    PostgreSQL, bulk_create elsewhere."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        _bulk_insert_portable(model, fields, rows)
        return
    qn = connection.ops.quote_name
    columns = _columns(model, fields)
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        params: list[Any] = []
        selects = []
        for i, column in enumerate(columns):
            values, sql_type = _array(column, [row[i] for row in batch])
            params.append(values)
            cast_to = "::jsonb" if isinstance(column, models.JSONField) else ""
            selects.append(f"%s::{sql_type}")
            if cast_to:
                raise TypeError("bulk_insert does not take JSON columns")
        sql = (
            f"INSERT INTO {qn(model._meta.db_table)} "  # noqa: S608 (names from model meta)
            f"({', '.join(qn(str(c.column)) for c in columns)}) "
            f"SELECT * FROM UNNEST({', '.join(selects)})"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


@transaction.atomic
def ledger_settle_many(
    *, actor: User | None, settlements: Sequence[tuple[Hold, Decimal]], memo: str = ""
) -> dict[int, Hold]:
    """Charge min(actual, held) out of each hold and release the rest, each exactly once.

    Returns {hold.pk: the hold as settled}; holds settled before are returned unchanged.
    """
    actuals: dict[int, Decimal] = {}
    for hold, actual in settlements:
        actuals[hold.pk] = _actual(actual)
    if not actuals:
        return {}
    # The same locks as ledger_settle, taken in one consistent order (holds by pk, then
    # allocations by ends_at, id) so concurrent batches never deadlock.
    holds = list(
        Hold.objects.select_for_update(no_key=True).filter(pk__in=list(actuals)).order_by("pk")
    )
    settled: dict[int, Hold] = {h.pk: h for h in holds if h.state == Hold.State.SETTLED}
    to_settle = [h for h in holds if h.state == Hold.State.OPEN]
    if not to_settle:
        return settled
    allocations = {
        a.pk: a
        for a in Allocation.objects.select_for_update(no_key=True)
        .filter(pk__in={h.allocation_id for h in to_settle})
        .order_by("ends_at", "id")
    }
    now = timezone.now()
    entries: dict[int, list[LedgerEntry]] = defaultdict(list)
    for hold in to_settle:
        allocation = allocations[hold.allocation_id]
        charge, release, hold_entries = _settlement(
            allocation, hold, actuals[hold.pk], actor=actor, memo=memo
        )
        entries[allocation.pk].extend(hold_entries)
        hold.charged, hold.released = charge, release
        hold.state, hold.settled_at = Hold.State.SETTLED, now
        settled[hold.pk] = hold
    for pk, allocation in allocations.items():
        _post_many(allocation, entries[pk], actor=actor)
    bulk_set(
        Hold,
        ["charged", "released", "state", "settled_at"],
        [(h.pk, h.charged, h.released, h.state, h.settled_at) for h in to_settle],
    )
    for pk, allocation in allocations.items():
        if any(e.kind == LedgerEntry.Kind.CHARGE for e in entries[pk]):
            _after_charge(allocation)
    return settled
