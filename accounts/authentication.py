"""Bearer API tokens: `Authorization: Bearer gpuc_<prefix>_<secret>`; read tokens cannot write."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from accounts.models import ApiToken, User
from accounts.token_cache import claim_touch, local_lookup, token_lookup
from portal.cache import redis_key

TOKEN_PREFIX = "gpuc_"  # noqa: S105 (a public prefix, not a secret)
# An authentication scheme is an RFC 9110 token.
AUTH_SCHEME_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110 section 11.1).

    A header naming another scheme is left to the other authenticators (a proxy in front may
    use Basic). A header that is empty, blank or has the wrong number of parts answers 401
    with a message naming the expected form, never an error of the server."""

    keyword = "Bearer"
    malformed = "Malformed Authorization header: use 'Bearer <token>'"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        try:
            raw = authentication.get_authorization_header(request)
        except UnicodeEncodeError:  # only the test client can pass such a str
            raise exceptions.AuthenticationFailed(self.malformed) from None
        if not raw:
            return None
        # bytes.split() splits on ASCII whitespace only (str.split() would split on NBSP too).
        parts = raw.split()
        if not parts or not AUTH_SCHEME_RE.fullmatch(parts[0]):
            raise exceptions.AuthenticationFailed(self.malformed)
        if parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(self.malformed)
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API token") from None
        token_hash = hash_token(secret)
        # Cached a few seconds, dropped on revoke; a copy this process kept is checked, with
        # the rate counter read in the same round trip.
        token, count = local_lookup(token_hash, UserRateThrottle.counter_for(request))
        if count is not None:
            request._request.gpuc_rate_count = count  # type: ignore[attr-defined]
        if token is None:
            token = token_lookup(token_hash)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid API token")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API token was revoked")
        if token.expires_at is not None and token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("This API token has expired")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This account is disabled")
        now = timezone.now()
        stale = token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60
        if stale and claim_touch(token):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class TokenScopePermission(permissions.BasePermission):
    """A read-scoped token may only make safe (GET/HEAD/OPTIONS) requests."""

    message = "This API token is read-only"

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if isinstance(token, ApiToken) and token.scope == ApiToken.Scope.READ:
            return request.method in permissions.SAFE_METHODS
        return True


class UserRateThrottle(throttling.UserRateThrottle):
    """DRF's UserRateThrottle with a counter per fixed window instead of a list of timestamps.

    DRF's keeps every request time of the last window in one cached list that each request
    reads and rewrites whole (at 100 000/hour, up to 100 000 floats pickled per call). This one
    increments one counter per user and window: on Redis, one round trip (INCR + EXPIRE in a
    pipeline). A fixed window lets a client send up to twice the rate across a window edge."""

    # Set by SimpleRateThrottle.__init__ from the rate string; the stubs do not declare them.
    num_requests: int
    duration: int

    @classmethod
    def counter_for(cls, request: Request) -> Callable[[int], tuple[str, int] | None] | None:
        """What BearerTokenAuthentication increments with its token check, in the same Redis
        round trip: `(key, timeout)` of a user's counter of this window, when the view is
        throttled by this class (allow_request then uses that count)."""
        view = (request.parser_context or {}).get("view")
        if view is None or cls not in getattr(view, "throttle_classes", ()):
            return None
        throttle = cls()
        if throttle.rate is None:
            return None

        def counter(user_id: int) -> tuple[str, int]:
            window = int(throttle.timer() // throttle.duration)
            ident = throttle.cache_format % {"scope": throttle.scope, "ident": user_id}
            request._request.gpuc_rate_key = f"{ident}:{window}"  # type: ignore[attr-defined]
            return f"{ident}:{window}", throttle.duration + 1

        return counter

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        key = f"{self.key}:{window}"
        raw = getattr(request, "_request", None)  # the HttpRequest under DRF's Request
        prefetched = getattr(raw, "gpuc_rate_count", None)
        if prefetched is not None and getattr(raw, "gpuc_rate_key", None) == key:
            count = int(prefetched)  # counted with the token check (counter_for)
        else:
            count = self._count(key)
        self.wait_seconds = (window + 1) * self.duration - now
        return count <= self.num_requests

    def _count(self, key: str) -> int:
        timeout = self.duration + 1
        counter = redis_key(key, self.cache)
        if counter is not None:
            pipe = counter.client.pipeline(transaction=False)
            pipe.incr(counter.name)
            pipe.expire(counter.name, timeout)
            return int(pipe.execute()[0])
        if self.cache.add(key, 1, timeout):
            return 1
        try:
            return int(self.cache.incr(key))
        except ValueError:  # expired in between
            self.cache.add(key, 1, timeout)
            return 1

    def wait(self) -> float | None:
        return getattr(self, "wait_seconds", None)
