"""Per-row values for many rows in one statement (sync writes thousands of jobs per tick).

On PostgreSQL this is one `UPDATE ... FROM (VALUES ...)` per 2,000 rows; elsewhere (the
SQLite development default) it falls back to Django's bulk_update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models

BATCH = 2000


def bulk_set(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Set `fields` on many rows; each row is (pk, value of fields[0], value of fields[1], ...)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        objects = [model(pk=row[0], **dict(zip(fields, row[1:], strict=True))) for row in rows]
        model._default_manager.bulk_update(objects, list(fields), batch_size=500)
        return
    meta = model._meta
    qn = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    pk = meta.pk
    if pk is None:
        raise TypeError(f"{model.__name__} has no primary key")
    set_sql = ", ".join(
        f"{qn(c.column)} = v.{qn(c.column)}::{c.db_type(connection)}" for c in columns
    )
    names = ", ".join(["_pk", *(qn(c.column) for c in columns)])
    row_sql = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        params: list[Any] = []
        for row in batch:
            params.append(row[0])
            params.extend(
                column.get_db_prep_save(value, connection)
                for column, value in zip(columns, row[1:], strict=True)
            )
        sql = (
            f"UPDATE {qn(meta.db_table)} AS t SET {set_sql} "  # noqa: S608 (names from model meta)
            f"FROM (VALUES {', '.join([row_sql] * len(batch))}) AS v({names}) "
            f"WHERE t.{qn(pk.column)} = v._pk::bigint"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
