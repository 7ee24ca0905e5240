"""Parsing identifiers that arrive in URLs, forms and webhook metadata."""

from __future__ import annotations

import uuid
from typing import Any


def as_uuid(value: Any) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (so a lookup finds nothing: 404)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None
