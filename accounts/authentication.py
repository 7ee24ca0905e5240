"""Bearer API tokens: `Authorization: Bearer gpuc_<prefix>_<secret>`; read tokens cannot write."""

from __future__ import annotations

import hashlib
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from accounts.models import ApiToken, User

TOKEN_PREFIX = "gpuc_"  # noqa: S105 (a public prefix, not a secret)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0] != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Bearer <token>'"
            )
        token = (
            ApiToken.objects.select_related("user").filter(token_hash=hash_token(parts[1])).first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid API token")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API token was revoked")
        if token.expires_at is not None and token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("This API token has expired")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This account is disabled")
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
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
