"""One way to show numbers, durations and dates, for the web pages, the CSV exports and `gpuc`.

Pure Python (no Django): the command-line client imports it too.

- SU amounts: two decimal places with thousands separators ("12,345.68"); an amount that is
  not zero but would round to 0.00 keeps the ledger's precision ("0.0042"), so a charge is
  never shown as nothing.
- SU rates (SU per unit): up to six places, never fewer than two ("0.25", "0.000278").
- CSV cells: the ledger's exact value at four places, no separators ("12345.6789").
- Periods: an end instant is exclusive (the allocation stops at it); people read the last day
  it still runs, so ranges are written "2026-01-01 – 2026-12-31" with an inclusive last day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

LEDGER_QUANTUM = Decimal("0.0001")  # quotas.models.SU: decimal_places=4
DISPLAY_QUANTUM = Decimal("0.01")
RATE_QUANTUM = Decimal("0.000001")  # Rate.su_per_unit: decimal_places=6
EMPTY = "—"
# Rate resources in words (quotas.models.Rate.Resource's labels; a test keeps them equal).
RESOURCE_WORDS = {
    "gpu_hour": "GPU-hour",
    "cpu_hour": "CPU-hour",
    "mem_gb_hour": "GB-hour of memory",
}

Number = Decimal | int | float | str


def _decimal(value: Number | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        # str() first: a float is read as it prints (0.1, not 0.1000000000000000055511...)
        return Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None


def format_su(value: Number | None) -> str:
    """An amount of SU for people: 2 places and separators, the ledger's 4 places when 2 would
    show a non-zero amount as 0.00; "—" for nothing."""
    amount = _decimal(value)
    if amount is None:
        return EMPTY
    ledger = amount.quantize(LEDGER_QUANTUM, rounding=ROUND_HALF_UP)
    shown = ledger.quantize(DISPLAY_QUANTUM, rounding=ROUND_HALF_UP)
    if shown == 0 and ledger != 0:
        return f"{ledger.normalize():,f}"
    if shown == 0:
        shown = abs(shown)  # never "-0.00"
    return f"{shown:,.2f}"


def format_su_rate(value: Number | None) -> str:
    """SU per unit of a rate: up to 6 places (the rate's precision), at least 2."""
    rate = _decimal(value)
    if rate is None:
        return EMPTY
    rate = rate.quantize(RATE_QUANTUM, rounding=ROUND_HALF_UP).normalize()
    if -rate.as_tuple().exponent < 2:  # type: ignore[operator]
        rate = rate.quantize(DISPLAY_QUANTUM)
    return f"{rate:,f}"


def su_csv(value: Number | None) -> str:
    """An SU amount for a CSV cell: the ledger's exact 4 places, no separators, no float noise."""
    amount = _decimal(value)
    if amount is None:
        return ""
    return f"{amount.quantize(LEDGER_QUANTUM, rounding=ROUND_HALF_UP):f}"


def format_duration(seconds: float | int | timedelta | None) -> str:
    """A runtime: "45 s", "12 min 5 s", "3 h 04 min", "2 d 03 h"; "—" for none."""
    if seconds is None:
        return EMPTY
    total = int(seconds.total_seconds() if isinstance(seconds, timedelta) else seconds)
    total = max(total, 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def last_day(end: datetime | date | None) -> date | None:
    """The last day (UTC) an exclusive end instant still covers: an allocation ending at
    2027-01-01 00:00 runs through 2026-12-31."""
    if end is None:
        return None
    if not isinstance(end, datetime):
        return end
    if end.tzinfo is not None:
        end = end.astimezone(UTC)
    return (end - timedelta(microseconds=1)).date()


def format_date_range(start: datetime | date | None, end: datetime | date | None) -> str:
    """A period with an inclusive last day: "2026-01-01 – 2026-12-31". `end` is an exclusive
    instant when a datetime (allocations), the inclusive last day when a date (requests)."""
    first = start.astimezone(UTC).date() if isinstance(start, datetime) else start
    final = last_day(end)
    left = f"{first:%Y-%m-%d}" if first else "…"
    right = f"{final:%Y-%m-%d}" if final else "…"
    return f"{left} – {right}"


def rate_name(code: str | None) -> str:
    """A rate's resource in words: "gpu_hour" -> "GPU-hour"; "gpu_hour:a100" (a cost line)
    -> "GPU-hour (a100)"."""
    resource, _, gpu_type = str(code or "").partition(":")
    words = RESOURCE_WORDS.get(resource, resource.replace("_", " "))
    return f"{words} ({gpu_type})" if gpu_type else words


def last_day_iso(value: str | None) -> str:
    """The inclusive last day of an exclusive end sent as an ISO timestamp ("" for none)."""
    if not value:
        return ""
    try:
        end = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)[:10]
    return f"{last_day(end):%Y-%m-%d}"
