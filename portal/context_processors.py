from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from quotas.policy import is_facility_admin, is_reviewer


def portal(request: HttpRequest) -> dict[str, Any]:
    # The same rules as the pages behind the links: superusers review and manage too.
    return {
        "billing_enabled": bool(settings.STRIPE_SECRET_KEY),
        "is_reviewer": is_reviewer(request.user),
        "is_facility_admin": is_facility_admin(request.user),
    }
