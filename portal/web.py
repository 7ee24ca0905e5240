"""Helpers shared by the apps' HTML views (the web counterpart of portal/api.py): domain
errors become the 404 page, a form error or a flash message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest

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


def run_action(request: HttpRequest, action: Callable[[], Any], success: str) -> bool:
    """Call a service for a button-style form (no fields to attach errors to): a flash
    message either way, True when it succeeded; NotFound becomes the 404 page."""
    try:
        action()
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except DomainError as exc:
        messages.error(request, exc.detail)
        return False
    messages.success(request, success)
    return True
