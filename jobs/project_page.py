"""The project page's recent jobs and cluster accounts (see accounts.project_page)."""

from __future__ import annotations

from typing import Any

from accounts.models import Project
from accounts.project_page import ProjectSection
from jobs import selectors

RECENT_JOBS = 10


def project_jobs_section(user: Any, project: Project) -> ProjectSection | None:
    """For the project's members: its newest jobs, its members' cluster accounts and the
    access requests still open (four queries, whatever their number)."""
    if not selectors.project_is_member(user=user, project=project):
        return None
    return ProjectSection(
        template="jobs/_project_jobs.html",
        order=20,
        context={
            "jobs": selectors.project_recent_jobs(user=user, project=project, limit=RECENT_JOBS),
            "cluster_accounts": selectors.project_cluster_accounts(project=project),
            "access_requests": selectors.project_open_access_requests(project=project),
        },
    )
