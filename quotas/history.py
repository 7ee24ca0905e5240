"""The change history (django-simple-history) of quotas' objects, as the pages show it."""

from __future__ import annotations

from typing import Any

from django.db.models import Model


def history_rows(obj: Model, *, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The object's simple-history records, newest first, each with what changed and who."""
    # `history` is the manager django-simple-history's HistoricalRecords adds to the model
    # class at runtime: no stub can name it on a Model.
    records = list(obj.history.select_related("history_user").order_by("-history_date", "-pk"))  # type: ignore[attr-defined]
    rows = []
    for i, record in enumerate(records):
        older = records[i + 1] if i + 1 < len(records) else None
        changes = []
        if older is not None:
            delta = record.diff_against(older, excluded_fields=list(exclude))
            changes = [(c.field, c.old, c.new) for c in delta.changes]
        rows.append(
            {
                "when": record.history_date,
                "who": record.history_user,
                "type": {"+": "created", "~": "changed", "-": "deleted"}[record.history_type],
                "changes": changes,
                "reason": record.history_change_reason,
            }
        )
    return rows
