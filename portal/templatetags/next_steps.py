"""`{% next_steps %}`: the user's next step as buttons (portal.next_steps)."""

from __future__ import annotations

from typing import Any

from django import template

from portal.next_steps import next_steps_for_user

register = template.Library()


@register.inclusion_tag("portal/_next_steps.html", takes_context=True)
def next_steps(context: dict[str, Any], always: bool = False) -> dict[str, Any]:
    """Renders nothing for a user who is set up, unless `always`."""
    request = context.get("request")
    found = next_steps_for_user(getattr(request, "user", None))
    return {"next": found, "show": always or not found.ready}
