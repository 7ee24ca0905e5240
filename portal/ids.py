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
