"""The self-serve trial: a small allocation a company organization may start once.

Amount, length and clusters are the facility's (GPUC_TRIAL_SU, GPUC_TRIAL_DAYS,
GPUC_TRIAL_CLUSTERS); the acting user must be an owner or admin of the organization with a
verified email address. The row in `Trial` (unique per organization) is what makes it once.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Organization, Project, User
from accounts.roles import ORG_MANAGER_ROLES
from accounts.selectors import org_role
from accounts.services import project_create
from portal.errors import NotFound, PermissionDenied
from quotas.exceptions import (
    EmailNotVerified,
    InvalidRequest,
    TrialAlreadyUsed,
    TrialUnavailable,
)
from quotas.models import Allocation, Cluster, Trial
from quotas.policy import cluster_refusal
from quotas.services.ledger import ledger_credit

TRIAL_PROJECT_NAME = "Trial"


def trial_amount() -> Decimal:
    return Decimal(str(settings.GPUC_TRIAL_SU))


def trials_enabled() -> bool:
    return trial_amount() > 0 and settings.GPUC_TRIAL_DAYS > 0


def trial_refusal(*, actor: User, organization: Organization) -> str | None:
    """Why `actor` may not start a trial for `organization` now, in words; None if they may.

    Reads only: the dashboard and the billing page use it to offer (or explain) the button.
    """
    if not trials_enabled():
        return "This facility offers no self-serve trials."
    if organization.kind != Organization.Kind.COMPANY:
        return (
            f"Trials are for company organizations; {organization.name} is "
            f"{organization.get_kind_display().lower()}: request a grant instead."
        )
    if org_role(actor, organization) not in ORG_MANAGER_ROLES:
        return f"Only an owner or admin of {organization.name} can start its trial."
    if used := Trial.objects.filter(organization=organization).first():
        return f"{organization.name} already had its trial (started {used.created_at:%Y-%m-%d})."
    if not _email_verified(actor):
        return "Verify your email address first (Account → Email)."
    return None


def _email_verified(user: User) -> bool:
    from allauth.account.models import EmailAddress

    # allauth ships no type information: its manager answers Any.
    return bool(EmailAddress.objects.filter(user=user, verified=True).exists())


def _trial_clusters(project: Project) -> list[Cluster]:
    clusters = Cluster.objects.filter(enabled=True).order_by("name")
    if names := settings.GPUC_TRIAL_CLUSTERS:
        clusters = clusters.filter(name__in=names)
    return [c for c in clusters if cluster_refusal(c, project) is None]


@transaction.atomic
def trial_start(
    *, actor: User, organization: Organization, project: Project | None = None
) -> Allocation:
    """Credit the organization's one trial (GPUC_TRIAL_SU for GPUC_TRIAL_DAYS) to `project`.

    Without a project: the organization's only active project, or a new project "Trial" when
    it has none. Refused, with nothing written: outsiders (404), not an owner/admin (403), an
    unverified email (403), not a company or trials off (400), a second trial (409).
    """
    role = org_role(actor, organization)
    if role is None:
        raise NotFound("Organization not found")
    # Serialises concurrent starts for one organization; the unique constraint is the backstop.
    organization = Organization.objects.select_for_update().get(pk=organization.pk)
    if not trials_enabled():
        raise TrialUnavailable("This facility offers no self-serve trials.")
    if organization.kind != Organization.Kind.COMPANY:
        raise TrialUnavailable(
            f"Trials are for company organizations; {organization.name} is "
            f"{organization.get_kind_display().lower()}: request a grant instead."
        )
    if role not in ORG_MANAGER_ROLES:
        raise PermissionDenied(f"Only an owner or admin of {organization.name} can start its trial")
    if used := Trial.objects.filter(organization=organization).first():
        raise TrialAlreadyUsed(
            f"{organization.name} already had its trial (started {used.created_at:%Y-%m-%d}); "
            "buy SU or request a grant to continue."
        )
    if not _email_verified(actor):
        raise EmailNotVerified("Verify your email address before starting a trial")
    project = _trial_project(actor=actor, organization=organization, project=project)
    clusters = _trial_clusters(project)
    if not clusters:
        raise TrialUnavailable("No cluster is open to trials at the moment; contact the facility.")
    now = timezone.now()
    amount = trial_amount()
    allocation = Allocation.objects.create(
        project=project,
        kind=Allocation.Kind.TRIAL,
        starts_at=now,
        ends_at=now + timedelta(days=settings.GPUC_TRIAL_DAYS),
        memo=f"Self-serve trial of {organization.name}"[:500],
    )
    allocation.clusters.set(clusters)
    try:
        with transaction.atomic():
            Trial.objects.create(organization=organization, allocation=allocation, started_by=actor)
    except IntegrityError:
        raise TrialAlreadyUsed(f"{organization.name} already had its trial") from None
    ledger_credit(
        actor=actor,
        allocation=allocation,
        amount=amount,
        key=f"trial:{organization.uuid}",
        memo=f"Trial credit: {amount} SU for {settings.GPUC_TRIAL_DAYS} days",
    )
    allocation.refresh_from_db()
    return allocation


def _trial_project(*, actor: User, organization: Organization, project: Project | None) -> Project:
    if project is not None:
        if project.organization_id != organization.pk or not project.is_active:
            raise NotFound("Project not found")
        return project
    active = list(Project.objects.filter(organization=organization, is_active=True)[:2])
    if len(active) == 1:
        return active[0]
    if len(active) > 1:
        raise InvalidRequest("Choose the project that receives the trial", field="project")
    return project_create(actor=actor, organization=organization, name=TRIAL_PROJECT_NAME)
