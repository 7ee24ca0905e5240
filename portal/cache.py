"""The Redis client behind Django's default cache, for what the cache API cannot say in one
round trip (a counter with its expiry, several commands in one pipeline)."""

from __future__ import annotations

from typing import Any, NamedTuple

from django.core.cache import BaseCache
from django.core.cache import cache as default_cache


class RedisKey(NamedTuple):
    """A cache key as Redis names it, with the client of the server that holds it."""

    client: Any
    name: str  # cache.make_and_validate_key(key): prefix, version and key


def redis_key(key: str, cache: BaseCache = default_cache) -> RedisKey | None:
    """`key` of `cache` (Django's default cache unless told) on its Redis server, or None for
    another cache backend."""
    client_of = getattr(getattr(cache, "_cache", None), "get_client", None)
    if client_of is None or not hasattr(cache, "make_and_validate_key"):
        return None
    name = cache.make_and_validate_key(key)
    return RedisKey(client_of(name, write=True), name)
