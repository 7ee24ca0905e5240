"""Bearer tokens (with their user) looked up in the shared cache for a few seconds.

Scripts that poll the API present the same token many times a second; reading its row and its
user from PostgreSQL on every request costs more than the rest of a small request. The cache is
Django's default cache (Redis in production: CACHES from CACHE_URL), so it is shared by every
process. An entry is never trusted after the token or its user changed in a way that matters:
the services that revoke a token or deactivate a user call `forget_tokens` /
`forget_user_tokens`, which replace the entries by a tombstone at once (in every process, since
the cache is shared). A tombstone also stops a request that read the row just before the change
from putting the old row back (entries are only ever added, never overwritten). With a
per-process cache (locmem, the development default) tokens are read from the database each time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from accounts.models import ApiToken

ENTRY_SECONDS = 5
# Longer than any request between reading a row and adding its entry.
TOMBSTONE_SECONDS = 60
TOMBSTONE = "forgotten"
# last_used_at is written at most once a minute per token (one cache add decides who writes).
TOUCH_SECONDS = 60


def _key(token_hash: str) -> str:
    return f"gpuc:api-token:{token_hash}"


def _shared() -> bool:
    """Only a cache that every process reads (Redis, Memcached, the database) may hold tokens:
    a per-process one (the development default) could not be told of a revocation elsewhere."""
    backend = settings.CACHES["default"]["BACKEND"]
    return not backend.endswith(("LocMemCache", "DummyCache"))


def token_lookup(token_hash: str) -> ApiToken | None:
    """The token with this hash, its user loaded, from the cache or the database."""
    if not _shared():
        return ApiToken.objects.select_related("user").filter(token_hash=token_hash).first()
    key = _key(token_hash)
    cached: Any = cache.get(key)
    if isinstance(cached, ApiToken):
        return cached
    token = ApiToken.objects.select_related("user").filter(token_hash=token_hash).first()
    if token is not None and cached is None:
        cache.add(key, token, ENTRY_SECONDS)
    return token


def claim_touch(token: ApiToken) -> bool:
    """True for the one request per TOUCH_SECONDS that should write the token's last_used_at."""
    return bool(cache.add(f"gpuc:api-token-touched:{token.token_hash}", 1, TOUCH_SECONDS))


def forget_tokens(token_hashes: Iterable[str]) -> None:
    """Drop these tokens' entries now (a tombstone: the next requests read the database)."""
    keys = {_key(token_hash): TOMBSTONE for token_hash in token_hashes}
    if keys:
        cache.set_many(keys, TOMBSTONE_SECONDS)


def forget_user_tokens(user_id: int) -> None:
    """Drop the entries of every token of this user (deactivated, deleted or changed)."""
    forget_tokens(ApiToken.objects.filter(user_id=user_id).values_list("token_hash", flat=True))
