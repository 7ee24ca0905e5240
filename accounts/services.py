"""Writes on tenants, memberships, invitations and API tokens.

Role rules, enforced here so the web pages, the API and commands share them:
- organization owners and admins manage members, invitations and projects; only an owner
  grants, changes or removes the owner role; an organization always keeps one owner;
- project PIs and managers (and organization owners/admins) manage project members; only a
  PI or an organization owner/admin grants or removes the PI role; a project keeps one PI;
- anyone may leave (remove themselves), within the two rules above.
A caller who cannot see the object gets NotFound, one who can see it but lacks the role
gets NotAllowed (403).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import slugify

from accounts import selectors
from accounts.authentication import TOKEN_PREFIX, hash_token
from accounts.departures import member_departed
from accounts.exceptions import (
    AlreadyMember,
    InvalidExpiry,
    InvitationEmailMismatch,
    InvitationUnusable,
    LastOwner,
    LastPI,
    NotAllowed,
    NotOrganizationMember,
    SlugTaken,
)
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
from accounts.token_cache import forget_tokens, forget_user_tokens
from portal import mail
from portal.errors import DomainError, NotFound

INVITATION_LIFETIME = timedelta(days=7)


def _check_length(value: str, *, field: str, max_length: int) -> None:
    if len(value) > max_length:
        raise DomainError(
            f"Ensure this field has no more than {max_length} characters.", field=field
        )


def _unique_slug(base: str, taken: Callable[[str], bool], *, max_length: int) -> str:
    base = (slugify(base) or "x")[: max_length - 5].strip("-") or "x"
    candidate, n = base, 2
    while taken(candidate):
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _require_org_role(actor: User, org: Organization, roles: tuple[str, ...]) -> str:
    """The actor's role, if it is one of `roles`; NotFound for outsiders, NotAllowed otherwise."""
    role = selectors.org_role(actor, org)
    if role is None:
        raise NotFound("Organization not found")
    if role not in roles:
        raise NotAllowed(f"This needs one of the organization roles: {', '.join(roles)}")
    return role


def _lock_org(org: Organization) -> Organization:
    # Serialises membership changes of one organization, so two owners cannot both step down.
    return Organization.objects.select_for_update().get(pk=org.pk)


def _lock_project(project: Project) -> Project:
    return Project.objects.select_for_update().get(pk=project.pk)


# --- organizations ----------------------------------------------------------------------


@transaction.atomic
def org_create(
    *,
    actor: User,
    name: str,
    slug: str = "",
    kind: str = Organization.Kind.ACADEMIC,
    billing_email: str = "",
) -> Organization:
    """Create an organization with the actor as its owner. A blank slug is derived from the
    name; a slug already in use is refused (SlugTaken)."""
    name = name.strip()
    if not name:
        raise DomainError("This field may not be blank.", field="name")
    _check_length(name, field="name", max_length=200)
    max_slug = Organization._meta.get_field("slug").max_length or 80
    if slug:
        _check_length(slug, field="slug", max_length=max_slug)
        if slugify(slug) != slug:
            raise DomainError("Use lowercase letters, digits and hyphens only.", field="slug")
    else:
        slug = _unique_slug(
            name, lambda s: Organization.objects.filter(slug=s).exists(), max_length=max_slug
        )
    if kind not in Organization.Kind.values:
        raise DomainError(f"'{kind}' is not a valid kind.", field="kind")
    org = Organization(name=name, slug=slug, kind=kind, billing_email=billing_email)
    org.full_clean(exclude=["slug"])
    try:
        with transaction.atomic():
            org.save()
    except IntegrityError:
        raise SlugTaken(f"The slug '{slug}' is already in use", field="slug") from None
    Membership.objects.create(organization=org, user=actor, role=Membership.Role.OWNER)
    return org


@transaction.atomic
def membership_add(
    *, actor: User, organization: Organization, user: User, role: str = Membership.Role.MEMBER
) -> Membership:
    """Add a user to an organization (owners/admins; only owners grant the owner role)."""
    actor_role = _require_org_role(actor, organization, ORG_MANAGER_ROLES)
    if role not in Membership.Role.values:
        raise DomainError(f"'{role}' is not a valid role.", field="role")
    if role == Membership.Role.OWNER and actor_role != Membership.Role.OWNER:
        raise NotAllowed("Only an owner can make someone an owner", field="role")
    _lock_org(organization)
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise AlreadyMember(f"{user} is already a member of {organization}", field="user")
    return Membership.objects.create(organization=organization, user=user, role=role)


@transaction.atomic
def membership_role_change(*, actor: User, membership: Membership, role: str) -> Membership:
    """Change a member's organization role, keeping at least one owner."""
    org = membership.organization
    actor_role = _require_org_role(actor, org, ORG_MANAGER_ROLES)
    if role not in Membership.Role.values:
        raise DomainError(f"'{role}' is not a valid role.", field="role")
    _lock_org(org)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    touches_owner = Membership.Role.OWNER in (membership.role, role)
    if touches_owner and actor_role != Membership.Role.OWNER:
        raise NotAllowed("Only an owner can grant or take away the owner role", field="role")
    if membership.role == Membership.Role.OWNER and role != Membership.Role.OWNER:
        _ensure_another_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


def _ensure_another_owner(membership: Membership) -> None:
    others = Membership.objects.filter(
        organization_id=membership.organization_id, role=Membership.Role.OWNER
    ).exclude(pk=membership.pk)
    if not others.exists():
        raise LastOwner(
            "An organization must keep at least one owner: make someone else owner first",
            field="role",
        )


@transaction.atomic
def membership_remove(*, actor: User, membership: Membership) -> None:
    """Remove a member from an organization and its projects (managers, or the member
    themself); an organization keeps at least one owner."""
    org = membership.organization
    if membership.user_id != actor.pk:
        actor_role = _require_org_role(actor, org, ORG_MANAGER_ROLES)
        if membership.role == Membership.Role.OWNER and actor_role != Membership.Role.OWNER:
            raise NotAllowed("Only an owner can remove an owner")
    _lock_org(org)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Membership.Role.OWNER:
        _ensure_another_owner(membership)
    ProjectMember.objects.filter(project__organization=org, user_id=membership.user_id).delete()
    membership.delete()
    member_departed(membership.user_id)


# --- projects ---------------------------------------------------------------------------


@transaction.atomic
def project_create(
    *,
    actor: User,
    organization: Organization,
    name: str,
    slug: str = "",
    description: str = "",
) -> Project:
    """Create a project in an organization (owners/admins); the actor becomes its PI."""
    _require_org_role(actor, organization, ORG_MANAGER_ROLES)
    name = name.strip()
    if not name:
        raise DomainError("This field may not be blank.", field="name")
    _check_length(name, field="name", max_length=200)
    max_slug = Project._meta.get_field("slug").max_length or 80
    in_org = Project.objects.filter(organization=organization)
    if slug:
        _check_length(slug, field="slug", max_length=max_slug)
        if slugify(slug) != slug:
            raise DomainError("Use lowercase letters, digits and hyphens only.", field="slug")
    else:
        slug = _unique_slug(name, lambda s: in_org.filter(slug=s).exists(), max_length=max_slug)
    project = Project(organization=organization, name=name, slug=slug, description=description)
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError:
        raise SlugTaken(
            f"The slug '{slug}' is already used in {organization}", field="slug"
        ) from None
    ProjectMember.objects.create(project=project, user=actor, role=ProjectMember.Role.PI)
    return project


def _require_project_manager(actor: User, project: Project) -> bool:
    """True when the actor may grant the PI role (a PI or an org owner/admin)."""
    selectors.project_get_for_user(actor, project.uuid)  # NotFound for outsiders
    role = selectors.project_role(actor, project)
    org_manager = selectors.can_manage_organization(actor, project.organization)
    if role not in PROJECT_MANAGER_ROLES and not org_manager:
        raise NotAllowed("This needs the project role PI or manager, or an organization admin")
    return org_manager or role == ProjectMember.Role.PI


@transaction.atomic
def project_member_add(
    *, actor: User, project: Project, user: User, role: str = ProjectMember.Role.MEMBER
) -> ProjectMember:
    """Add a member of the project's organization to the project."""
    may_grant_pi = _require_project_manager(actor, project)
    if role not in ProjectMember.Role.values:
        raise DomainError(f"'{role}' is not a valid role.", field="role")
    if role == ProjectMember.Role.PI and not may_grant_pi:
        raise NotAllowed("Only a PI or an organization admin can make someone PI", field="role")
    if not Membership.objects.filter(organization_id=project.organization_id, user=user).exists():
        raise NotOrganizationMember(
            f"{user} is not a member of {project.organization}: invite them to it first",
            field="user",
        )
    _lock_project(project)
    if ProjectMember.objects.filter(project=project, user=user).exists():
        raise AlreadyMember(f"{user} is already a member of {project}", field="user")
    return ProjectMember.objects.create(project=project, user=user, role=role)


def _ensure_another_pi(member: ProjectMember) -> None:
    others = ProjectMember.objects.filter(
        project_id=member.project_id, role=ProjectMember.Role.PI
    ).exclude(pk=member.pk)
    if not others.exists():
        raise LastPI(
            "A project must keep at least one PI: make someone else PI first", field="role"
        )


@transaction.atomic
def project_member_role_change(*, actor: User, member: ProjectMember, role: str) -> ProjectMember:
    """Change a project member's role, keeping at least one PI."""
    may_grant_pi = _require_project_manager(actor, member.project)
    if role not in ProjectMember.Role.values:
        raise DomainError(f"'{role}' is not a valid role.", field="role")
    _lock_project(member.project)
    member = ProjectMember.objects.select_for_update().get(pk=member.pk)
    if ProjectMember.Role.PI in (member.role, role) and not may_grant_pi:
        raise NotAllowed("Only a PI or an organization admin can change the PI role", field="role")
    if member.role == ProjectMember.Role.PI and role != ProjectMember.Role.PI:
        _ensure_another_pi(member)
    member.role = role
    member.save(update_fields=["role"])
    return member


@transaction.atomic
def project_member_remove(*, actor: User, member: ProjectMember) -> None:
    """Remove someone from a project (managers, or the member themself); keeps one PI."""
    if member.user_id != actor.pk:
        may_grant_pi = _require_project_manager(actor, member.project)
        if member.role == ProjectMember.Role.PI and not may_grant_pi:
            raise NotAllowed("Only a PI or an organization admin can remove a PI")
    _lock_project(member.project)
    member = ProjectMember.objects.select_for_update().get(pk=member.pk)
    if member.role == ProjectMember.Role.PI:
        _ensure_another_pi(member)
    member.delete()
    member_departed(member.user_id)


# --- invitations ------------------------------------------------------------------------


def invitation_url(raw_token: str) -> str:
    """The emailed link: the code rides in the fragment, which browsers never send, so it stays
    out of request lines and access logs (the landing page posts it)."""
    return f"{invitation_open_url()}#{raw_token}"


def invitation_open_url() -> str:
    return mail.url_for("accounts:invitation_open")


def _send_invitation(invitation_pk: int, raw_token: str) -> None:
    invitation = Invitation.objects.select_related("organization", "project", "invited_by").get(
        pk=invitation_pk
    )
    context = {
        "invitation": invitation,
        "url": invitation_url(raw_token),
        "open_url": invitation_open_url(),
        "code": raw_token,
        **mail.context(),
    }
    subject = render_to_string("accounts/email/invitation_subject.txt", context).strip()
    body = render_to_string("accounts/email/invitation_message.txt", context)
    send_mail(subject, body, None, [invitation.email])


@transaction.atomic
def invitation_create(
    *,
    actor: User,
    organization: Organization,
    email: str,
    org_role: str = Membership.Role.MEMBER,
    project: Project | None = None,
    project_role: str = ProjectMember.Role.MEMBER,
    lifetime: timedelta = INVITATION_LIFETIME,
) -> tuple[Invitation, str]:
    """Invite an email address to an organization (and optionally one of its projects).

    Returns the invitation and the raw link token (only its hash is stored); the link is
    emailed after commit. A pending invitation for the same address is replaced."""
    if project is not None and project.organization_id != organization.pk:
        raise NotFound("Project not found")
    actor_role = selectors.org_role(actor, organization)
    if actor_role is None:
        raise NotFound("Organization not found")
    if project is not None and actor_role not in ORG_MANAGER_ROLES:
        # Project PIs/managers may invite people into their project, as plain org members.
        _require_project_manager(actor, project)
        org_role = Membership.Role.MEMBER
    elif actor_role not in ORG_MANAGER_ROLES:
        raise NotAllowed("Only organization owners and admins can invite")
    if org_role not in Membership.Role.values:
        raise DomainError(f"'{org_role}' is not a valid role.", field="org_role")
    if project_role not in ProjectMember.Role.values:
        raise DomainError(f"'{project_role}' is not a valid role.", field="project_role")
    if org_role == Membership.Role.OWNER and actor_role != Membership.Role.OWNER:
        raise NotAllowed("Only an owner can invite an owner", field="org_role")
    pi_invite = project_role == ProjectMember.Role.PI and project is not None
    if pi_invite and not _require_project_manager(actor, project):  # type: ignore[arg-type]
        raise NotAllowed("Only a PI or an organization admin can invite a PI", field="project_role")
    email = email.strip()
    invitation = Invitation(
        organization=organization,
        project=project,
        email=email,
        org_role=org_role,
        project_role=project_role,
        invited_by=actor,
        expires_at=timezone.now() + lifetime,
        token_hash="0" * 64,
    )
    invitation.full_clean(exclude=["token_hash", "invited_by"])
    existing_member = Membership.objects.filter(
        organization=organization, user__email__iexact=email
    ).exists()
    if existing_member and (
        project is None
        or ProjectMember.objects.filter(project=project, user__email__iexact=email).exists()
    ):
        raise AlreadyMember(f"{email} is already a member", field="email")
    now = timezone.now()
    Invitation.objects.filter(
        organization=organization,
        project=project,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    ).update(revoked_at=now)
    raw = secrets.token_urlsafe(32)
    invitation.token_hash = hash_token(raw)
    invitation.save()
    pk = invitation.pk
    transaction.on_commit(lambda: _send_invitation(pk, raw))
    return invitation, raw


@transaction.atomic
def invitation_accept(*, actor: User, raw_token: str) -> Invitation:
    """Join the invitation's organization (and project) as the signed-in user, whose verified
    email addresses must include the invited one. Accepting twice is refused."""
    from allauth.account.models import EmailAddress

    invitation = selectors.invitation_get_by_token(raw_token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_usable:
        raise InvitationUnusable("This invitation was already used, revoked, or has expired")
    verified = EmailAddress.objects.filter(
        user=actor, email__iexact=invitation.email, verified=True
    ).exists()
    if not verified:
        raise InvitationEmailMismatch(
            f"This invitation is for {invitation.email}: sign in with that (verified) address"
        )
    _lock_org(invitation.organization)
    Membership.objects.get_or_create(
        organization=invitation.organization,
        user=actor,
        defaults={"role": invitation.org_role},
    )
    if invitation.project is not None:
        ProjectMember.objects.get_or_create(
            project=invitation.project, user=actor, defaults={"role": invitation.project_role}
        )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = actor
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    return invitation


@transaction.atomic
def invitation_revoke(*, actor: User, invitation: Invitation) -> Invitation:
    """Cancel a pending invitation (organization owners/admins, or whoever sent it)."""
    if invitation.invited_by_id != actor.pk:
        _require_org_role(actor, invitation.organization, ORG_MANAGER_ROLES)
    elif selectors.org_role(actor, invitation.organization) is None:
        raise NotFound("Organization not found")
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
    return invitation


# --- API tokens -------------------------------------------------------------------------


def demo_token_secret(prefix: str) -> str:
    """A token secret derived from SECRET_KEY and the prefix: lets bootstrap_demo re-print its
    demo token. Only for that command; ordinary tokens have random secrets."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"gpuc-demo-token:{prefix}".encode(), "sha256"
    ).hexdigest()
    return digest[:43]


@transaction.atomic
def api_token_create(
    *,
    actor: User,
    name: str,
    scope: str = ApiToken.Scope.WRITE,
    expires_at: datetime | None = None,
    secret_from_prefix: Callable[[str], str] | None = None,
) -> tuple[ApiToken, str]:
    """Issue a personal API token. Returns the token row and the raw value
    `gpuc_<prefix>_<secret>`, which is shown once: only its SHA-256 is stored."""
    name = name.strip()
    if not name:
        raise DomainError("This field may not be blank.", field="name")
    _check_length(name, field="name", max_length=100)
    if scope not in ApiToken.Scope.values:
        raise DomainError(f"'{scope}' is not a valid scope.", field="scope")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidExpiry("The expiry must be in the future", field="expires_at")
    for _attempt in range(5):
        prefix = secrets.token_hex(4)
        if not ApiToken.objects.filter(prefix=prefix).exists():
            break
    secret = secret_from_prefix(prefix) if secret_from_prefix else secrets.token_urlsafe(32)
    raw = f"{TOKEN_PREFIX}{prefix}_{secret}"
    token = ApiToken.objects.create(
        user=actor,
        name=name,
        prefix=prefix,
        token_hash=hash_token(raw),
        scope=scope,
        expires_at=expires_at,
    )
    return token, raw


@transaction.atomic
def api_token_revoke(*, actor: User, token: ApiToken) -> ApiToken:
    """Revoke one of the actor's tokens; it stops working at once. Revoking twice is a no-op."""
    if token.user_id != actor.pk:
        raise NotFound("API token not found")
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    forget_tokens([token.token_hash])
    return token


@transaction.atomic
def user_set_active(*, actor: User | None, user: User, is_active: bool) -> User:
    """Deactivate (or reactivate) an account: a deactivated user's sessions and API tokens stop
    working at once, in every process."""
    User.objects.filter(pk=user.pk).update(is_active=is_active)
    user.is_active = is_active
    forget_user_tokens(user.pk)
    return user
