"""The error pages of the whole site: under /api/ every error is the API's JSON
``{"detail": "...", "code": "..."}`` (in production too, where Django would otherwise answer an
HTML page), everywhere else the usual HTML page. Wired as handler400/403/404/500 in portal.urls.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults

API_PREFIX = "/api/"


class BadInput(BadRequest):
    """A request no view can serve (say, a NUL character in a parameter); its message names
    the problem and is safe to show."""

    code = "invalid_character"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


def _api_error(status: HTTPStatus, detail: str, code: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code, **extra}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if isinstance(exception, BadInput):
        if is_api_request(request):
            extra = {"field": exception.field} if exception.field else {}
            return _api_error(HTTPStatus.BAD_REQUEST, exception.detail, exception.code, **extra)
        return render(
            request, "400.html", {"detail": exception.detail}, status=HTTPStatus.BAD_REQUEST
        )
    # Django's own 400s (a disallowed host, too many fields, ...) say nothing more.
    if is_api_request(request):
        return _api_error(HTTPStatus.BAD_REQUEST, "Bad request", "bad_request")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return _api_error(
            HTTPStatus.FORBIDDEN,
            "You do not have permission to perform this action.",
            "permission_denied",
        )
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return _api_error(HTTPStatus.NOT_FOUND, "Not found.", "not_found")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Called by Django after it has logged the exception (django.request, with traceback)."""
    if is_api_request(request):
        return _api_error(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error", "server_error")
    return defaults.server_error(request)
