"""The Redis client behind Django's default cache, for what the cache API cannot say in one
round trip (a counter with its expiry, several commands in one pipeline)."""

from __future__ import annotations

from typing import Any

from django.core.cache import BaseCache
from django.core.cache import cache as default_cache


def redis_client(key: str, cache: BaseCache = default_cache) -> Any:
    """The Redis client of `cache` (Django's default cache unless told) for this key (its full
    key: `cache.make_and_validate_key(key)`), or None for another cache backend."""
    client_of = getattr(getattr(cache, "_cache", None), "get_client", None)
    if client_of is None or not hasattr(cache, "make_and_validate_key"):
        return None
    return client_of(cache.make_and_validate_key(key), write=True)
