"""Helpers shared by the apps' HTML views (the web counterpart of portal/api.py): domain
errors become the 404 page, a refusal page with the error's status, a form error or a flash
message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from portal.errors import DomainError, NotFound

T = TypeVar("T")


def visible(fetch: Callable[..., T], *args: Any) -> T:
    """Run a scoped selector; NotFound becomes the ordinary 404 page."""
    try:
        return fetch(*args)
    except NotFound as exc:
        raise Http404(exc.detail) from None


def form_error(form: forms.Form, exc: DomainError) -> None:
    """Attach a domain error to the field it names, or to the form as a whole."""
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, exc.detail)


def refusal(request: HttpRequest, exc: DomainError, *, back: str = "") -> HttpResponse:
    """A refused action as a page of its own, with the error's status (403 for a permission)
    and its message: for refusals that no retry or edit on the same page can fix."""
    return render(
        request,
        "portal/refused.html",
        {"detail": exc.detail, "code": exc.code, "status": int(exc.status), "back": back},
        status=exc.status,
    )


def run_action(
    request: HttpRequest,
    action: Callable[[], Any],
    success: str,
    *,
    propagate: tuple[type[DomainError], ...] = (),
) -> bool:
    """Call a service for a button-style form (no fields to attach errors to): a flash
    message either way, True when it succeeded; NotFound becomes the 404 page. Errors of the
    `propagate` types are raised to the view (e.g. to answer with `refusal`)."""
    try:
        action()
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except propagate:
        raise
    except DomainError as exc:
        messages.error(request, exc.detail)
        return False
    messages.success(request, success)
    return True
