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

On Redis, each process also keeps the tokens it read for ENTRY_SECONDS, stamped with the shared
revocation generation (a counter every `forget_*` call increments). A request served from there
reads only that counter, in the same round trip as its rate-limit counter
(`local_lookup`): a revocation anywhere changes the counter, so every process drops its copies
on its next request.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db.models import Model

from accounts.models import ApiToken
from portal.cache import redis_key

M = TypeVar("M", bound=Model)
ENTRY_SECONDS = 5
# Longer than any request between reading a row and adding its entry.
TOMBSTONE_SECONDS = 60
TOMBSTONE = "forgotten"
# last_used_at is written at most once a minute per token (one cache add decides who writes).
TOUCH_SECONDS = 60
GENERATION_KEY = "gpuc:api-token-generation"
# Per process: token hash -> (expiry on the monotonic clock, generation when read, token).
_local: dict[str, tuple[float, Any, ApiToken]] = {}
_local_lock = threading.Lock()
LOCAL_MAX = 10_000
# Per process: token hash -> when (monotonic) to ask the shared cache again whether to touch.
_touch_asked: dict[str, float] = {}


def _key(token_hash: str) -> str:
    return f"gpuc:api-token:{token_hash}"


def _shared() -> bool:
    """Only a cache that every process reads (Redis, Memcached, the database) may hold tokens:
    a per-process one (the development default) could not be told of a revocation elsewhere."""
    backend = settings.CACHES["default"]["BACKEND"]
    return not backend.endswith(("LocMemCache", "DummyCache"))


def local_lookup(token_hash: str, counter: Any = None) -> tuple[ApiToken | None, int | None]:
    """(this process's copy of the token if the revocation generation has not moved since it
    was read, the value of `counter` after an increment) in one Redis round trip.

    `counter(user_id)` names the rate counter of the token's user as (cache key, timeout), or
    None; the count is None when there was no copy or no counter."""
    entry = _local.get(token_hash)
    if entry is None:
        return None, None
    expires, generation, token = entry
    if expires < time.monotonic():
        _local.pop(token_hash, None)
        return None, None
    shared = redis_key(GENERATION_KEY)
    if shared is None:
        return None, None
    named = counter(token.user_id) if counter is not None else None
    pipe = shared.client.pipeline(transaction=False)
    pipe.get(shared.name)
    if named is not None:
        full_key = cache.make_and_validate_key(named[0])
        pipe.incr(full_key)
        pipe.expire(full_key, named[1])
    replies = pipe.execute()
    count = int(replies[1]) if named is not None else None
    if (None if replies[0] is None else int(replies[0])) != generation:
        _local.pop(token_hash, None)
        return None, count
    return _copy(token), count


def _copy(token: ApiToken) -> ApiToken:
    """A copy for one request (as an unpickled cache entry is): the kept one is shared."""
    token = _shallow(token)
    token.user = _shallow(token.user)
    return token


def _shallow(instance: M) -> M:
    """What copy.copy makes of a model instance (its own state and cache of related objects,
    the same field values), without the pickle protocol's detour through the app registry."""
    clone = instance.__class__.__new__(instance.__class__)
    values = instance.__dict__.copy()
    state = values["_state"] = copy.copy(instance._state)
    state.fields_cache = instance._state.fields_cache.copy()
    clone.__dict__.update(values)
    return clone


def token_lookup(token_hash: str) -> ApiToken | None:
    """The token with this hash, its user loaded, from the cache or the database."""
    if not _shared():
        return ApiToken.objects.select_related("user").filter(token_hash=token_hash).first()
    key = _key(token_hash)
    on_redis = redis_key(key) is not None
    # The generation before the entry: a revocation after this read shows in the copy's check.
    generation = cache.get(GENERATION_KEY) if on_redis else None
    cached: Any = cache.get(key)
    if isinstance(cached, ApiToken):
        token: ApiToken | None = cached
        keep = True
    else:
        token = ApiToken.objects.select_related("user").filter(token_hash=token_hash).first()
        # Kept only where no tombstone says it was just revoked (and maybe not yet committed).
        keep = token is not None and cached is None and bool(cache.add(key, token, ENTRY_SECONDS))
    if on_redis and keep and token is not None:
        with _local_lock:
            if len(_local) >= LOCAL_MAX:
                _local.clear()
            _local[token_hash] = (time.monotonic() + ENTRY_SECONDS, generation, token)
    return token


def claim_touch(token: ApiToken) -> bool:
    """True for the one request per TOUCH_SECONDS that should write the token's last_used_at.

    A process asks the shared cache at most once per ENTRY_SECONDS per token (its kept copy of
    the token still carries the old last_used_at, so every request would ask again): a token in
    use is touched within TOUCH_SECONDS + ENTRY_SECONDS, never more than once per minute."""
    now = time.monotonic()
    if _touch_asked.get(token.token_hash, 0.0) > now:
        return False
    if len(_touch_asked) >= LOCAL_MAX:
        _touch_asked.clear()
    _touch_asked[token.token_hash] = now + ENTRY_SECONDS
    return bool(cache.add(f"gpuc:api-token-touched:{token.token_hash}", 1, TOUCH_SECONDS))


def forget_tokens(token_hashes: Iterable[str]) -> None:
    """Drop these tokens' entries now (a tombstone: the next requests read the database)."""
    keys = {_key(token_hash): TOMBSTONE for token_hash in token_hashes}
    if keys:
        cache.set_many(keys, TOMBSTONE_SECONDS)
        _bump_generation()
        for token_hash in token_hashes if isinstance(token_hashes, list | tuple) else ():
            _local.pop(token_hash, None)


def _bump_generation() -> None:
    """Every process's copies of tokens are stale from now on (they check this counter)."""
    try:
        cache.incr(GENERATION_KEY)
    except ValueError:  # not there yet (or evicted): any new value differs from the copies'
        if not cache.add(GENERATION_KEY, 1, None):
            cache.incr(GENERATION_KEY)


def forget_user_tokens(user_id: int) -> None:
    """Drop the entries of every token of this user (deactivated, deleted or changed)."""
    forget_tokens(ApiToken.objects.filter(user_id=user_id).values_list("token_hash", flat=True))
