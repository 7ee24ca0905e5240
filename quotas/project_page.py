"""The project page's balance, allocations and grant requests (see accounts.project_page)."""

from __future__ import annotations

from typing import Any

from accounts.models import Project
from accounts.project_page import ProjectSection
from quotas import selectors
from quotas.models import ZERO, Allocation

RECENT_REQUESTS = 10
ALLOCATIONS_SHOWN = 20


def project_funding_section(user: Any, project: Project) -> ProjectSection | None:
    """Balance (available SU over active allocations), the allocations, newest ending last,
    and the latest grant requests: three queries, whatever their number."""
    if not selectors.visible_projects(user).filter(pk=project.pk).exists():
        return None
    allocations = list(
        selectors.allocations_for_user(user)
        .filter(project=project)
        .order_by("-ends_at", "-id")[:ALLOCATIONS_SHOWN]
    )
    active = [a for a in allocations if a.status == Allocation.Status.ACTIVE]
    requests = list(
        selectors.allocation_requests_for_user(user)
        .filter(project=project)
        .order_by("-updated_at", "-id")[:RECENT_REQUESTS]
    )
    return ProjectSection(
        template="quotas/_project_funding.html",
        order=10,
        context={
            "allocations": allocations,
            "requests": requests,
            "available": sum((a.available for a in active), ZERO),
            "held": sum((a.held for a in active), ZERO),
            "active_count": len(active),
            "can_request": selectors.manageable_projects(user).filter(pk=project.pk).exists(),
        },
    )
