"""Reads about clusters, allocations, the ledger and grant requests, scoped to the caller.

Visibility: an allocation (and its ledger) is visible to the members of its project and to
the owners, admins and billing members of the project's organization; facility admins see all.
A grant request is visible to the same people, and to reviewers once it has been submitted.
Anything else answers NotFound, never a hint that it exists.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from accounts.models import Membership, Organization, Project, ProjectMember, User
from accounts.roles import ORG_VIEWER_ROLES
from accounts.selectors import AnyUser, projects_managed_by
from portal.errors import NotFound
from portal.ids import get_by_uuid
from quotas.models import ZERO, Allocation, AllocationRequest, Cluster, LedgerEntry, Rate
from quotas.policy import conflicted_projects, is_facility_admin, is_reviewer

# Cluster options a user may see: never URLs, credentials, secret names or key file paths.
PUBLIC_OPTION_KEYS = frozenset({"gpu_types", "partitions", "default_partition", "gpus", "nodes"})


def visible_projects(user: AnyUser) -> QuerySet[Project]:
    """Projects whose allocations the user may see (members; org owners, admins, billing)."""
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(
        Q(pk__in=ProjectMember.objects.filter(user=user).values("project_id"))
        | Q(
            organization_id__in=Membership.objects.filter(
                user=user, role__in=ORG_VIEWER_ROLES
            ).values("organization_id")
        )
    )


def suspended_allocations_for_member(user: AnyUser) -> QuerySet[Allocation]:
    """Suspended allocations of the projects the user sees as a member (staff included: only
    their own, not every tenant's), with the reason given, most recently changed first."""
    return (
        Allocation.objects.filter(
            status=Allocation.Status.SUSPENDED, project__in=visible_projects(user)
        )
        .select_related("project")
        .order_by("project__name", "ends_at")[:20]
    )


def manageable_projects(user: AnyUser) -> QuerySet[Project]:
    """Projects the user may request SU for: PI/manager, or owner/admin of the organization."""
    return (
        projects_managed_by(user)
        .select_related("organization")
        .order_by("organization__name", "name")
    )


def project_for_user(user: AnyUser, project_uuid: Any) -> Project:
    return get_by_uuid(
        visible_projects(user).select_related("organization"),
        project_uuid,
        NotFound("Project not found", field="project"),
    )


# --- clusters and rates -------------------------------------------------------------------


def public_options(cluster: Cluster) -> dict[str, Any]:
    """The options a user may see: GPU types, partitions and max_* limits; nothing secret."""
    return {
        key: value
        for key, value in cluster.options.items()
        if key in PUBLIC_OPTION_KEYS or key.startswith("max_")
    }


def clusters_for_user(user: User) -> list[Cluster]:
    """Enabled clusters open to at least one of the user's organizations (all, for staff)."""
    clusters = list(Cluster.objects.filter(enabled=True).order_by("name"))
    if is_facility_admin(user):
        return clusters
    slugs = set(Organization.objects.filter(memberships__user=user).values_list("slug", flat=True))
    return [c for c in clusters if c.is_open_to(*slugs)]


@dataclass(frozen=True)
class RateRow:
    resource: str
    gpu_type: str
    su_per_unit: Decimal
    effective_from: datetime
    current: bool  # False: scheduled for later


def rate_schedule(
    clusters: list[Cluster], *, at: datetime | None = None
) -> dict[int, list[RateRow]]:
    """Per cluster id: the rates in force at `at` and the ones scheduled after it (one query)."""
    at = at or timezone.now()
    out: dict[int, list[RateRow]] = defaultdict(list)
    seen: set[tuple[int, str, str]] = set()
    rates = Rate.objects.filter(cluster__in=clusters).order_by(
        "cluster_id", "resource", "gpu_type", "-effective_from"
    )
    for rate in rates:
        ident = (rate.cluster_id, rate.resource, rate.gpu_type)
        if rate.effective_from > at:
            out[rate.cluster_id].append(
                RateRow(rate.resource, rate.gpu_type, rate.su_per_unit, rate.effective_from, False)
            )
        elif ident not in seen:
            seen.add(ident)
            out[rate.cluster_id].append(
                RateRow(rate.resource, rate.gpu_type, rate.su_per_unit, rate.effective_from, True)
            )
    return out


def cluster_for_staff(cluster_uuid: Any) -> Cluster:
    return get_by_uuid(Cluster.objects.all(), cluster_uuid, NotFound("Cluster not found"))


# --- allocations and the ledger -------------------------------------------------------------


def allocations_for_user(user: AnyUser) -> QuerySet[Allocation]:
    qs = Allocation.objects.select_related("project__organization").prefetch_related("clusters")
    if is_facility_admin(user):
        return qs
    return qs.filter(project__in=visible_projects(user))


def allocation_cluster_names(allocation_ids: list[int]) -> dict[int, list[str]]:
    """The sorted cluster names of each of these allocations (one statement)."""
    names: dict[int, list[str]] = defaultdict(list)
    through = Allocation.clusters.through.objects.filter(allocation_id__in=allocation_ids)
    for allocation_id, name in through.values_list("allocation_id", "cluster__name"):
        names[allocation_id].append(name)
    return {key: sorted(value) for key, value in names.items()}


def visible_project_ids(*, user_id: int, project_uuid: Any) -> QuerySet[Project, Any]:
    """The id of the project with this uuid when the user with this id may see its
    allocations (project_for_user's rule), as `values("pk")`."""
    return visible_projects(User(pk=user_id)).filter(uuid=project_uuid).values("pk")


def visible_project_allocations(
    *, user_id: int, project_uuid: Any, status: str | None = None
) -> QuerySet[Allocation]:
    """The allocations of the project with this uuid when the user with this id may see them
    (visible_project_ids' rule), soonest-ending first; none when the project is not visible
    (visible_project_ids then tells a 404 from a project without allocations)."""
    qs = Allocation.objects.filter(
        project__in=visible_project_ids(user_id=user_id, project_uuid=project_uuid)
    )
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("ends_at", "id")


def project_allocation_cluster_names(*, project_id: int) -> QuerySet[Any, Any]:
    """(allocation_id, cluster__name) of every allocation of a project, as values."""
    return Allocation.clusters.through.objects.filter(allocation__project_id=project_id).values(
        "allocation_id", "cluster__name"
    )


def allocation_for_user(user: AnyUser, allocation_uuid: Any) -> Allocation:
    return get_by_uuid(
        allocations_for_user(user), allocation_uuid, NotFound("Allocation not found")
    )


def allocation_ledger(allocation: Allocation) -> QuerySet[LedgerEntry]:
    return allocation.ledger.select_related("actor", "cluster").order_by("-created_at", "-id")


@dataclass(frozen=True)
class Burn:
    last_7_days: Decimal
    last_30_days: Decimal

    @property
    def per_day(self) -> Decimal:
        return (self.last_7_days / 7).quantize(Decimal("0.01"))

    def days_left(self, available: Decimal) -> int | None:
        """Days until `available` runs out at the last week's pace (None: not burning)."""
        return int(available / self.per_day) if self.per_day > 0 else None


def burn_rates(allocation_ids: list[int], *, now: datetime | None = None) -> dict[int, Burn]:
    """Net SU charged (charges minus refunds) per allocation over the last 7 and 30 days."""
    now = now or timezone.now()
    week, month = now - timedelta(days=7), now - timedelta(days=30)
    rows = (
        LedgerEntry.objects.filter(
            allocation_id__in=allocation_ids,
            kind__in=[LedgerEntry.Kind.CHARGE, LedgerEntry.Kind.REFUND],
            created_at__gte=month,
        )
        .values("allocation_id")
        .annotate(
            c7=Sum("amount", filter=Q(kind=LedgerEntry.Kind.CHARGE, created_at__gte=week)),
            r7=Sum("amount", filter=Q(kind=LedgerEntry.Kind.REFUND, created_at__gte=week)),
            c30=Sum("amount", filter=Q(kind=LedgerEntry.Kind.CHARGE)),
            r30=Sum("amount", filter=Q(kind=LedgerEntry.Kind.REFUND)),
        )
    )
    burn = {pk: Burn(ZERO, ZERO) for pk in allocation_ids}
    for row in rows:
        burn[row["allocation_id"]] = Burn(
            (row["c7"] or ZERO) - (row["r7"] or ZERO), (row["c30"] or ZERO) - (row["r30"] or ZERO)
        )
    return burn


# --- grant requests -------------------------------------------------------------------------


def allocation_requests_for_user(user: AnyUser) -> QuerySet[AllocationRequest]:
    """The requests of the user's projects; plus every submitted-or-later one for reviewers."""
    qs = AllocationRequest.objects.select_related(
        "project__organization", "requested_by", "allocation", "extends"
    ).prefetch_related("clusters")
    if not user.is_authenticated:
        return qs.none()
    mine = Q(project__in=visible_projects(user))
    if is_reviewer(user) or is_facility_admin(user):
        return qs.filter(mine | ~Q(state=AllocationRequest.State.DRAFT))
    return qs.filter(mine)


def allocation_request_for_user(user: AnyUser, request_uuid: Any) -> AllocationRequest:
    return get_by_uuid(
        allocation_requests_for_user(user), request_uuid, NotFound("Allocation request not found")
    )


def my_allocation_requests(user: AnyUser) -> QuerySet[AllocationRequest]:
    """Requests of the projects the user belongs to (not the reviewers' view of everyone's)."""
    if not user.is_authenticated:
        return AllocationRequest.objects.none()
    return allocation_requests_for_user(user).filter(project__in=visible_projects(user))


def review_queue(user: AnyUser, *, state: str | None = None) -> QuerySet[AllocationRequest]:
    """For reviewers: submitted requests, oldest first (or every non-draft one in `state`);
    never those of the reviewer's own organizations or projects (conflicts of interest)."""
    if not is_reviewer(user):
        return AllocationRequest.objects.none()
    wanted = state or AllocationRequest.State.SUBMITTED
    return (
        allocation_requests_for_user(user)
        .filter(state=wanted)
        .exclude(state=AllocationRequest.State.DRAFT)
        .exclude(project__in=Project.objects.filter(conflicted_projects(user)))
        .order_by("updated_at", "id")
    )


# --- staff: search and usage reports ----------------------------------------------------------


def staff_search(query: str) -> tuple[QuerySet[Organization], QuerySet[Project]]:
    """Organizations and projects whose name or slug contains `query` (or the first ones)."""
    orgs = Organization.objects.order_by("name")
    projects = Project.objects.select_related("organization").order_by("organization__name", "name")
    query = query.strip()
    if query:
        orgs = orgs.filter(Q(name__icontains=query) | Q(slug__icontains=query))
        projects = projects.filter(
            Q(name__icontains=query)
            | Q(slug__icontains=query)
            | Q(organization__name__icontains=query)
        )
    return orgs, projects


def staff_people_search(query: str) -> QuerySet[User]:
    """People whose username, name or email contains `query` (nobody for an empty query)."""
    query = query.strip()
    if not query:
        return User.objects.none()
    q = Q(username__icontains=query) | Q(email__icontains=query)
    q |= Q(first_name__icontains=query) | Q(last_name__icontains=query)
    if " " in query:  # "Ada Lovelace"
        first, _, last = query.partition(" ")
        q |= Q(first_name__icontains=first, last_name__icontains=last.strip())
    return User.objects.filter(q).order_by("username")


@dataclass(frozen=True)
class UsageRow:
    month: datetime
    organization: str
    project: str
    cluster: str
    charged: Decimal
    refunded: Decimal

    @property
    def net(self) -> Decimal:
        return self.charged - self.refunded


def usage_report(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    organization: Organization | None = None,
    project: Project | None = None,
    cluster: Cluster | None = None,
) -> list[UsageRow]:
    """Charged and refunded SU grouped by month, organization, project and cluster."""
    entries = LedgerEntry.objects.filter(
        kind__in=[LedgerEntry.Kind.CHARGE, LedgerEntry.Kind.REFUND]
    )
    if since:
        entries = entries.filter(created_at__gte=since)
    if until:
        entries = entries.filter(created_at__lt=until)
    if organization:
        entries = entries.filter(allocation__project__organization=organization)
    if project:
        entries = entries.filter(allocation__project=project)
    if cluster:
        entries = entries.filter(cluster=cluster)
    rows = (
        entries.annotate(month=TruncMonth("created_at"))
        .values(
            "month",
            "allocation__project__organization__name",
            "allocation__project__name",
            "cluster__name",
        )
        .annotate(
            charged=Sum("amount", filter=Q(kind=LedgerEntry.Kind.CHARGE)),
            refunded=Sum("amount", filter=Q(kind=LedgerEntry.Kind.REFUND)),
        )
        .order_by(
            "-month",
            "allocation__project__organization__name",
            "allocation__project__name",
            "cluster__name",
        )
    )
    return [
        UsageRow(
            month=row["month"],
            organization=row["allocation__project__organization__name"],
            project=row["allocation__project__name"],
            cluster=row["cluster__name"] or "",
            charged=row["charged"] or ZERO,
            refunded=row["refunded"] or ZERO,
        )
        for row in rows
    ]
