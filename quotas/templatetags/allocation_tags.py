"""`{% suspended_allocations as suspended %}`: the suspended allocations of the caller's own
projects (with the reason staff gave), for the dashboard's notice."""

from __future__ import annotations

from typing import Any

from django import template

from quotas.models import Allocation
from quotas.selectors import suspended_allocations_for_member

register = template.Library()


@register.simple_tag(takes_context=True)
def suspended_allocations(context: dict[str, Any]) -> list[Allocation]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None:
        return []
    return list(suspended_allocations_for_member(user))
