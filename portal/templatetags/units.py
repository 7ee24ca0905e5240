"""Template filters for SU amounts, rates, runtimes and periods (see portal.formatting).

Loaded as a builtin (settings.TEMPLATES): every template can write `{{ amount|su }}`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django import template

from portal import formatting

register = template.Library()


@register.filter
def su(value: Any) -> str:
    """`{{ allocation.available|su }}` -> "12,345.68"; a tiny charge keeps 4 places."""
    return formatting.format_su(value)


@register.filter
def su_rate(value: Any) -> str:
    """`{{ rate.su_per_unit|su_rate }}` -> "0.25" or "0.000278"."""
    return formatting.format_su_rate(value)


@register.filter
def runtime(job: Any) -> str:
    """How long a job ran: from start to end, or to now while it runs; "—" before it starts."""
    from django.utils import timezone

    started = getattr(job, "started_at", None)
    if started is None:
        return formatting.EMPTY
    ended = getattr(job, "ended_at", None) or timezone.now()
    return formatting.format_duration(ended - started)


@register.filter
def duration(value: float | int | timedelta | None) -> str:
    return formatting.format_duration(value)


@register.filter
def last_day(end: datetime | date | None) -> date | None:
    """An exclusive end instant as the last day it covers (use with |date)."""
    return formatting.last_day(end)


@register.simple_tag
def date_range(start: datetime | date | None, end: datetime | date | None) -> str:
    """`{% date_range a.starts_at a.ends_at %}` -> "2026-01-01 – 2026-12-31" (inclusive)."""
    return formatting.format_date_range(start, end)


@register.filter
def rate_name(value: Any) -> str:
    """A rate's resource in words ("GPU-hour"), from a Rate or its code; a cost line's
    "gpu_hour:a100" reads "GPU-hour (a100)"."""
    display = getattr(value, "get_resource_display", None)
    if callable(display):
        return str(display())
    return formatting.rate_name(value)
