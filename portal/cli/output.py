"""How gpuc prints: tables, JSON, and the API's values shortened for a terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from portal.formatting import format_duration


def print_json(data: Any) -> None:
    """The API's answer as it came, indented and with sorted keys (for scripts and jq)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell, two spaces apart; None prints as nothing."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def object_id(obj: dict[str, Any]) -> str:
    """An API object's id (its uuid), whichever of the two names it carries."""
    return str(obj.get("id") or obj.get("uuid") or "")


def related_name(value: Any) -> str:
    """A related object as the API may render it: a nested object, a name or an id."""
    if isinstance(value, dict):
        return str(value.get("slug") or value.get("name") or object_id(value))
    return "" if value is None else str(value)


def when(value: Any) -> str:
    """ISO timestamps shortened to 'YYYY-MM-DD HH:MM:SS' (UTC as the server sent it)."""
    return str(value or "").replace("T", " ")[:19]


def runtime(started: Any, ended: Any) -> str:
    """How long a job ran, from the API's started_at and ended_at: to its end, or to now while
    it runs ("12 min 5 s", as the web shows it); "—" before it starts."""
    try:
        start = datetime.fromisoformat(str(started)) if started else None
        end = datetime.fromisoformat(str(ended)) if ended else datetime.now(UTC)
    except ValueError:
        return format_duration(None)
    if start is None:
        return format_duration(None)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return format_duration(end - start)


def megabytes(mb: Any) -> str:
    if not isinstance(mb, int):
        return str(mb or "")
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


def duration(minutes: Any) -> str:
    """Minutes as gpuc's --time accepts them: 90 -> '1h30m', 1440 -> '1d'."""
    if not isinstance(minutes, int) or minutes <= 0:
        return str(minutes)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n)
