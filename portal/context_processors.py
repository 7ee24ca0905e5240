from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def portal(request: HttpRequest) -> dict[str, Any]:
    return {
        "billing_enabled": bool(settings.STRIPE_SECRET_KEY),
        "is_reviewer": request.user.is_authenticated
        and request.user.groups.filter(name="allocation reviewers").exists(),
        "is_facility_admin": request.user.is_authenticated
        and (request.user.is_staff or request.user.groups.filter(name="facility admins").exists()),
    }
