from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from quotas.billing.stripe_api import billing_enabled
from quotas.policy import is_facility_admin, is_reviewer


def portal(request: HttpRequest) -> dict[str, Any]:
    """What the navigation shows: the same rules the views enforce (quotas.policy)."""
    return {
        "billing_enabled": billing_enabled(),
        "is_reviewer": is_reviewer(request.user),
        "is_facility_admin": is_facility_admin(request.user),
    }
