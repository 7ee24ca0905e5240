"""Parsing identifiers that arrive in URLs, forms and webhook metadata."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from portal.errors import NotFound

M = TypeVar("M", bound=Model)


def as_uuid(value: Any) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (so a lookup finds nothing: 404)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def get_by_uuid(queryset: QuerySet[M], value: Any, error: NotFound) -> M:
    """The row of `queryset` (already scoped to the caller) with that uuid; `error` when there
    is none or `value` is no uuid, so a row outside the scope looks like no row at all."""
    key = as_uuid(value)
    row = queryset.filter(uuid=key).first() if key else None
    if row is None:
        raise error
    return row


def uuid_prefix_range(value: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The smallest and largest UUID starting with `value` (1 to 32 hexadecimal digits, dashes
    ignored, as the short ids the pages show: the first 8), or None when it is no such prefix.

    A range rather than a text match, so the lookup walks the uuid index on any database."""
    digits = value.strip().replace("-", "").lower()
    if not 1 <= len(digits) <= 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
