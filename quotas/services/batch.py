"""bulk_set / bulk_insert: one statement writing per-row values to many rows, from plain values
(no model instance per row). The ledger's batch settlement, jobs' sync and forwarding use them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from django.core.exceptions import EmptyResultSet
from django.db import connection, models
from django.db.models.lookups import Lookup

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


class AnyOf(Lookup[Sequence[int]]):
    """`pk__any=ids`: an integer column is one of `ids`, bound on PostgreSQL as ONE array
    parameter (`= ANY(%s::bigint[])`) instead of `IN` with one placeholder per value, which
    Django prepares value by value and PostgreSQL parses anew for every batch size: most of a
    sync batch's lookup cost. Elsewhere (SQLite) the plain `IN`. Registered on IntegerField
    (and so on every integer primary and foreign key) by the quotas app."""

    lookup_name = "any"
    prepare_rhs = False

    def get_prep_lookup(self) -> list[int]:
        return [int(value) for value in self.rhs]

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[str | int, ...]]:
        if not self.rhs:
            raise EmptyResultSet
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} IN ({', '.join(['%s'] * len(self.rhs))})", (*params, *self.rhs)

    def as_postgresql(self, compiler: Any, connection: Any) -> tuple[str, tuple[str | int, ...]]:
        if not self.rhs:
            raise EmptyResultSet
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s::bigint[])", (*params, _literal(list(self.rhs), numeric=True))
