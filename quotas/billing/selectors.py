"""Reads for the billing pages and API, scoped to the caller.

Only an organization's owners and billing members see or manage its billing; for everyone
else (other members, outsiders) the organization's billing does not exist (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet, Sum

from accounts.models import Organization, Project, User
from accounts.roles import ORG_BILLING_ROLES
from portal.errors import NotFound
from portal.ids import get_by_uuid
from quotas.billing.models import (
    BillingAccount,
    Invoice,
    MeterReport,
    PostpaidPlan,
    Purchase,
    RefundShortfall,
    SuPack,
)
from quotas.models import ZERO, Allocation

AnyUser = User | AnonymousUser


def billing_organizations_for_user(user: AnyUser) -> QuerySet[Organization]:
    """Organizations whose billing the user manages (owner or billing role)."""
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(
        memberships__user=user, memberships__role__in=ORG_BILLING_ROLES
    ).distinct()


def billing_organization_get_for_user(user: AnyUser, org_uuid: Any) -> Organization:
    """One organization whose billing the user manages, or NotFound."""
    return get_by_uuid(
        billing_organizations_for_user(user), org_uuid, NotFound("Organization not found")
    )


def can_manage_billing(user: AnyUser) -> bool:
    """Whether the user manages the billing of at least one organization (for the nav)."""
    return billing_organizations_for_user(user).exists()


def active_packs() -> QuerySet[SuPack]:
    return SuPack.objects.filter(active=True).order_by("su_amount", "name")


def pack_lookup(ref: Any) -> SuPack | None:
    """An active pack by numeric id or slug."""
    text = str(ref).strip() if ref is not None else ""
    if not text:
        return None
    query = Q(slug=text)
    if text.isdigit():
        query |= Q(pk=int(text))
    return active_packs().filter(query).first()


def billing_projects(org: Organization) -> QuerySet[Project]:
    return Project.objects.filter(organization=org, is_active=True).order_by("name")


@dataclass(frozen=True)
class PostpaidUsage:
    plan: PostpaidPlan
    allocation: Allocation | None
    credit_limit: Decimal
    charged: Decimal
    held: Decimal
    available: Decimal
    reported: Decimal
    pending: Decimal


@dataclass(frozen=True)
class BillingOverview:
    organization: Organization
    account: BillingAccount | None
    packs: list[SuPack]
    projects: list[Project]
    purchases: list[Purchase]
    invoices: list[Invoice]
    shortfalls: list[RefundShortfall]
    postpaid: PostpaidUsage | None


def postpaid_usage(org: Organization) -> PostpaidUsage | None:
    plan = PostpaidPlan.objects.filter(organization=org).select_related("allocation").first()
    if plan is None:
        return None
    alloc = plan.allocation
    reports = MeterReport.objects.filter(account__organization=org)
    sent = reports.filter(status=MeterReport.Status.SENT).aggregate(t=Sum("value"))["t"] or ZERO
    pending = reports.exclude(status=MeterReport.Status.SENT).aggregate(t=Sum("value"))["t"]
    return PostpaidUsage(
        plan=plan,
        allocation=alloc,
        credit_limit=plan.credit_limit,
        charged=alloc.charged if alloc else ZERO,
        held=alloc.held if alloc else ZERO,
        available=alloc.available if alloc else ZERO,
        reported=sent,
        pending=pending or ZERO,
    )


def billing_overview(org: Organization, *, limit: int = 50) -> BillingOverview:
    """Everything the billing page shows for one organization (caller already scoped)."""
    return BillingOverview(
        organization=org,
        account=BillingAccount.objects.filter(organization=org).first(),
        packs=list(active_packs()),
        projects=list(billing_projects(org)),
        purchases=list(
            Purchase.objects.filter(organization=org)
            .select_related("pack", "project", "allocation")
            .order_by("-created_at", "-id")[:limit]
        ),
        invoices=list(Invoice.objects.filter(organization=org).order_by("-stripe_created")[:limit]),
        shortfalls=list(
            RefundShortfall.objects.filter(organization=org, su_amount__gt=0).select_related(
                "purchase"
            )
        ),
        postpaid=postpaid_usage(org),
    )


def invoices_for_organization(org: Organization) -> QuerySet[Invoice]:
    return Invoice.objects.filter(organization=org)
