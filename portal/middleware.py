"""Request checks that hold for every view, API and HTML alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from django.contrib.auth import middleware as auth
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import Resolver404, resolve
from django_htmx import middleware as htmx

from portal.handlers import BadInput, bad_request

NUL = "\x00"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _shown(name: str) -> str:
    return name.replace(NUL, "\\u0000")


def _nul_in_pairs(pairs: Iterable[tuple[str, list[str]]], where: str) -> BadInput | None:
    for name, values in pairs:
        if NUL in name or any(NUL in value for value in values):
            return BadInput(
                f"{where} '{_shown(name)}' contains a NUL character (\\u0000), which is not "
                "allowed",
                field=_shown(name),
            )
    return None


def _streams_body(request: HttpRequest) -> bool:
    """Whether the view reads its body itself, streamed (project storage uploads): its file
    names are checked there, and parsing it here would spool the whole body first."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return False
    return bool(getattr(match.func, "streams_body", False))


def nul_problem(request: HttpRequest) -> BadInput | None:
    """The first NUL character in the path, the query string or a form body, as a BadInput.

    NUL can never be stored (PostgreSQL text refuses it) nor be part of a name, so it is
    refused here once instead of by every filter and form. JSON bodies are checked by the
    API's parser (portal.api.JSONParser)."""
    if NUL in request.path:
        return BadInput("The URL path contains a NUL character (\\u0000), which is not allowed")
    if problem := _nul_in_pairs(request.GET.lists(), "Query parameter"):
        return problem
    if (
        request.method in ("POST", "PUT", "PATCH")
        and request.content_type in FORM_TYPES
        and not _streams_body(request)
    ):
        try:
            if problem := _nul_in_pairs(request.POST.lists(), "Form field"):
                return problem
            for name, uploads in request.FILES.lists():
                if NUL in name or any(NUL in (upload.name or "") for upload in uploads):
                    return BadInput(
                        f"The file field '{_shown(name)}' names a file with a NUL character "
                        "(\\u0000), which is not allowed",
                        field=_shown(name),
                    )
        except MultiPartParserError as exc:
            return BadInput(f"Malformed multipart body: {exc}")
    return None


class RejectNulCharactersMiddleware:
    """400 (JSON under /api/, the 400 page elsewhere) for a NUL character in the path, the
    query string or a form body, naming the parameter."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if problem := nul_problem(request):
            return bad_request(request, problem)
        return self.get_response(request)


def is_token_api_request(request: HttpRequest) -> bool:
    """An API call that carries a bearer token: it authenticates by that token alone (or is
    refused), so it needs no session, messages or htmx state. (Django's CSRF middleware stays
    as it is, for `check --deploy`: DRF's views are exempt from it, it costs nearly nothing.)"""
    return request.path_info.startswith("/api/") and (
        request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
    )


class BrowserOnlyMixin:
    """Runs the middleware it is mixed into for every request except token-authenticated API
    calls, which go straight on (a polling script pays nothing for the browser's session
    machinery). Cookie-session API calls still get all of it, CSRF checks included. A subclass
    of the original, so Django's and the admin's system checks still find it."""

    get_response: Any  # the sync-or-async callable of the Django middleware mixed with

    def skipped(self, request: HttpRequest) -> None:
        """What a skipped request gets instead (nothing by default)."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_token_api_request(request):
            self.skipped(request)
            return cast(HttpResponse, self.get_response(request))  # a sync stack (WSGI)
        return cast(HttpResponse, super().__call__(request))  # type: ignore[misc]


class SessionMiddleware(BrowserOnlyMixin, sessions.SessionMiddleware):
    pass


class AuthenticationMiddleware(BrowserOnlyMixin, auth.AuthenticationMiddleware):
    def skipped(self, request: HttpRequest) -> None:
        # Anonymous until DRF's bearer authentication sets the token's user on the request.
        request.user = AnonymousUser()


class MessageMiddleware(BrowserOnlyMixin, messages.MessageMiddleware):
    pass


class HtmxMiddleware(BrowserOnlyMixin, htmx.HtmxMiddleware):
    pass
