"""Security headers Django 5.2 does not set: Content-Security-Policy and Permissions-Policy.

The policies live in settings (`SECURE_CSP` has the shape of Django 6.0's setting of that name,
so moving to 6.0 means swapping this middleware for `django.middleware.csp`). A response that
already carries a header keeps it, so one view can narrow or widen its own policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


def csp_header(policy: Mapping[str, Sequence[str]]) -> str:
    """`{"default-src": ["'self'"], ...}` as a header value: `default-src 'self'; ...`."""
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


def permissions_policy_header(policy: Mapping[str, Sequence[str]]) -> str:
    """`{"camera": [], "publickey-credentials-get": ["self"]}` as
    `camera=(), publickey-credentials-get=(self)`."""
    return ", ".join(f"{feature}=({' '.join(allow)})" for feature, allow in policy.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if settings.SECURE_CSP and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = csp_header(settings.SECURE_CSP)
        if settings.PERMISSIONS_POLICY and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = permissions_policy_header(settings.PERMISSIONS_POLICY)
        return response
