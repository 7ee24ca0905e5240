"""What every mail shares: links built from SITE_URL (never from a request's Host header),
subjects tagged and bodies signed with SITE_NAME. Read at send time, not import time."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse


def site_url(path: str = "") -> str:
    """An absolute link to `path` on this site."""
    base: str = settings.SITE_URL
    return base.rstrip("/") + path


def url_for(name: str, *args: Any, **kwargs: Any) -> str:
    """An absolute link to a named URL."""
    return site_url(reverse(name, args=args or None, kwargs=kwargs or None))


def subject(text: str) -> str:
    return f"[{settings.SITE_NAME}] {text}"


def signature() -> str:
    """The closing lines of every mail."""
    return f"\n-- \n{settings.SITE_NAME}\n{site_url('/')}\n"


def context() -> dict[str, str]:
    """For mail templates: `{{ site_name }}`, `{{ site_url }}` (and the signature include)."""
    return {"site_name": settings.SITE_NAME, "site_url": site_url("/")}
