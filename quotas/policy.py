"""Who may do what in quotas: the staff groups, conflicts of interest and which clusters a
project may use. Project and organization roles, and who manages a project, belong to accounts
(accounts.roles, accounts.selectors.can_manage_project).

Plain functions over users and rows (no queries served to a page: see selectors for those).
"""

from __future__ import annotations

from typing import TypeGuard

from django.db.models import Q

from accounts.models import Membership, Project, ProjectMember, User
from accounts.selectors import AnyUser
from quotas.models import Cluster

REVIEWERS_GROUP = "allocation reviewers"
FACILITY_ADMINS_GROUP = "facility admins"


def _authenticated(user: AnyUser | None) -> TypeGuard[User]:
    return bool(user is not None and user.is_authenticated and user.is_active)


def is_reviewer(user: AnyUser | None) -> TypeGuard[User]:
    """Members of the "allocation reviewers" group (and superusers) review grant requests."""
    if not _authenticated(user):
        return False
    return bool(user.is_superuser or user.groups.filter(name=REVIEWERS_GROUP).exists())


def is_facility_admin(user: AnyUser | None) -> TypeGuard[User]:
    """Staff or members of the "facility admins" group manage quotas (credit, extend, suspend)."""
    if not _authenticated(user):
        return False
    return bool(
        user.is_staff
        or user.is_superuser
        or user.groups.filter(name=FACILITY_ADMINS_GROUP).exists()
    )


# Conflict of interest: a user may not review a request of a project they are a member of, or
# of any project of an organization they belong to (any role). Staff are not exempt. The rule
# is written here once, in its two directions (projects of a user, users of a project).


def conflicted_projects(user: User) -> Q:
    """A Q over Project: the projects whose requests `user` may not review."""
    return Q(
        organization_id__in=Membership.objects.filter(user=user).values("organization_id")
    ) | Q(pk__in=ProjectMember.objects.filter(user=user).values("project_id"))


def conflicted_users(project: Project) -> Q:
    """A Q over User: the users who may not review the requests of `project`."""
    return Q(
        pk__in=Membership.objects.filter(organization_id=project.organization_id).values("user_id")
    ) | Q(pk__in=ProjectMember.objects.filter(project=project).values("user_id"))


def has_conflict_of_interest(user: AnyUser | None, project: Project) -> bool:
    """Whether `user` may not review the requests of `project` (see conflicted_projects)."""
    if not _authenticated(user):
        return False
    return Project.objects.filter(conflicted_projects(user), pk=project.pk).exists()


def cluster_refusal(cluster: Cluster, project: Project) -> str | None:
    """Why `project` may not use `cluster`, or None when it may.

    A project may use a cluster that is enabled and open to its organization
    (Cluster.is_open_to).
    """
    if not cluster.enabled:
        return f"cluster '{cluster.name}' is disabled"
    if not cluster.is_open_to(project.organization.slug):
        return f"cluster '{cluster.name}' is not open to organization '{project.organization.slug}'"
    return None
