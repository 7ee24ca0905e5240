"""The project page's recent jobs and cluster accounts (see accounts.project_page)."""

from __future__ import annotations

from typing import Any

from accounts.models import Project
from accounts.project_page import ProjectSection
from accounts.selectors import can_manage_project
from jobs import selectors
from jobs.services.sessions import idle_ceiling_minutes, project_idle_minutes

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


def project_sessions_section(user: Any, project: Project) -> ProjectSection | None:
    """For whoever sees the project page: how long its sessions may sit idle; its managers can
    change it (jobs.session_views.project_idle_limit). Two queries, three for a manager."""
    manager = can_manage_project(user, project)
    return ProjectSection(
        template="jobs/_project_sessions.html",
        order=25,
        context={
            "idle_minutes": project_idle_minutes(project=project),
            "max_idle_minutes": idle_ceiling_minutes() if manager else None,
            "can_manage": manager,
        },
    )
