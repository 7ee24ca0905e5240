"""Reads scoped to the caller: another tenant's organization or project does not exist for them.

Visibility rules:
- an organization is visible to its members (any role);
- a project is visible to its members and to the owners and admins of its organization,
  who manage every project of their organization.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.authentication import hash_token
from accounts.models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMember,
    User,
)
from accounts.roles import ORG_MANAGER_ROLES, PROJECT_MANAGER_ROLES
from portal.errors import NotFound
from portal.ids import get_by_uuid

AnyUser = User | AnonymousUser


# --- organizations --------------------------------------------------------------------


def organizations_for_user(user: AnyUser) -> QuerySet[Organization]:
    """Organizations the user belongs to, each annotated with `my_role`."""
    if not user.is_authenticated:
        return Organization.objects.none()
    role = Membership.objects.filter(organization=OuterRef("pk"), user=user).values("role")[:1]
    member_of = Membership.objects.filter(user=user).values("organization_id")
    return Organization.objects.filter(pk__in=member_of).annotate(my_role=Subquery(role))


def organizations_managed_by(user: AnyUser) -> QuerySet[Organization]:
    """The user's organizations where they are an owner or admin."""
    if not user.is_authenticated:
        return Organization.objects.none()
    managed = Membership.objects.filter(user=user, role__in=ORG_MANAGER_ROLES).values(
        "organization_id"
    )
    return organizations_for_user(user).filter(pk__in=managed)


def organization_get_for_user(user: AnyUser, org_uuid: Any) -> Organization:
    """One of the user's organizations, or NotFound (never a hint that it exists)."""
    return get_by_uuid(organizations_for_user(user), org_uuid, NotFound("Organization not found"))


def org_role(user: AnyUser, org: Organization) -> str | None:
    """The user's role in the organization, or None when they are not a member."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(organization=org, user=user)
        .values_list("role", flat=True)
        .first()
    )


def can_manage_organization(user: AnyUser, org: Organization) -> bool:
    return org_role(user, org) in ORG_MANAGER_ROLES


def organization_memberships(org: Organization) -> QuerySet[Membership]:
    """The members of an organization the caller has already been allowed to see."""
    return (
        Membership.objects.filter(organization=org)
        .select_related("user")
        .order_by("user__username")
    )


def organization_invitations_pending(org: Organization) -> QuerySet[Invitation]:
    return (
        Invitation.objects.filter(
            organization=org,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .select_related("project", "invited_by")
        .order_by("-created_at")
    )


# --- projects -------------------------------------------------------------------------


def projects_for_user(user: AnyUser) -> QuerySet[Project]:
    """Projects the user may see (member, or owner/admin of the organization), with `my_role`
    (the project role, None for an organization manager who is not a project member)."""
    if not user.is_authenticated:
        return Project.objects.none()
    role = ProjectMember.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    managed_orgs = Membership.objects.filter(user=user, role__in=ORG_MANAGER_ROLES).values(
        "organization_id"
    )
    member_of = ProjectMember.objects.filter(user=user).values("project_id")
    return (
        Project.objects.filter(Q(pk__in=member_of) | Q(organization_id__in=managed_orgs))
        .select_related("organization")
        .annotate(my_role=Subquery(role))
    )


def project_get_for_user(user: AnyUser, project_uuid: Any) -> Project:
    """One project the user may see, or NotFound."""
    return get_by_uuid(projects_for_user(user), project_uuid, NotFound("Project not found"))


def project_role(user: AnyUser, project: Project) -> str | None:
    """The user's role in the project (pi, manager, member), or None when not a member."""
    if not user.is_authenticated:
        return None
    return (
        ProjectMember.objects.filter(project=project, user=user)
        .values_list("role", flat=True)
        .first()
    )


def projects_managed_by(user: AnyUser) -> QuerySet[Project]:
    """The projects the user manages: as their PI or manager, or as an owner or admin of
    their organization. The one definition of "manages a project" (see can_manage_project)."""
    if not (user.is_authenticated and user.is_active):
        return Project.objects.none()
    return Project.objects.filter(
        Q(
            pk__in=ProjectMember.objects.filter(user=user, role__in=PROJECT_MANAGER_ROLES).values(
                "project_id"
            )
        )
        | Q(
            organization_id__in=Membership.objects.filter(
                user=user, role__in=ORG_MANAGER_ROLES
            ).values("organization_id")
        )
    )


def can_manage_project(user: AnyUser, project: Project) -> bool:
    """Whether the user manages the project (see projects_managed_by): PIs and managers may
    request SU, add members and edit the project; so may the organization's owners and admins."""
    return projects_managed_by(user).filter(pk=project.pk).exists()


def project_members(project: Project) -> QuerySet[ProjectMember]:
    return (
        ProjectMember.objects.filter(project=project)
        .select_related("user")
        .order_by("user__username")
    )


def organization_member_get(user: AnyUser, org_uuid: Any, user_id: int) -> Membership:
    """One membership of an organization the caller can see; NotFound otherwise."""
    org = organization_get_for_user(user, org_uuid)
    membership = organization_memberships(org).filter(user_id=user_id).first()
    if membership is None:
        raise NotFound("Member not found")
    return membership


def project_member_get(user: AnyUser, project_uuid: Any, user_id: int) -> ProjectMember:
    """One member of a project the caller can see; NotFound otherwise."""
    project = project_get_for_user(user, project_uuid)
    member = project_members(project).filter(user_id=user_id).first()
    if member is None:
        raise NotFound("Member not found")
    return member


def organization_projects_for_user(user: AnyUser, org: Organization) -> QuerySet[Project]:
    return projects_for_user(user).filter(organization=org).order_by("name")


# --- users, invitations, tokens ---------------------------------------------------------


def organization_member_find(org: Organization, login: str) -> User | None:
    """A member of `org` by email (case-insensitive) or exact username; None otherwise.
    Looking only among members reveals nothing about accounts outside the organization."""
    login = login.strip()
    if not login:
        return None
    query = Q(email__iexact=login) if "@" in login else Q(username=login)
    return User.objects.filter(query, memberships__organization=org).first()


def invitation_get_by_token(raw_token: str) -> Invitation:
    """The invitation a link's token opens (whatever its state), or NotFound."""
    invitation = (
        Invitation.objects.select_related("organization", "project", "invited_by")
        .filter(token_hash=hash_token(raw_token))
        .first()
    )
    if invitation is None:
        raise NotFound("Invitation not found")
    return invitation


def invitation_accepted_by(user: AnyUser, invitation_uuid: Any) -> Invitation | None:
    """An invitation the user accepted (to send them on to what they joined), or None."""
    if not user.is_authenticated:
        return None
    return (
        Invitation.objects.select_related("organization", "project")
        .filter(uuid=invitation_uuid, accepted_by=user)
        .first()
    )


def api_tokens_for_user(user: AnyUser) -> QuerySet[ApiToken]:
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def api_token_get_for_user(user: AnyUser, token_uuid: Any) -> ApiToken:
    return get_by_uuid(api_tokens_for_user(user), token_uuid, NotFound("API token not found"))
