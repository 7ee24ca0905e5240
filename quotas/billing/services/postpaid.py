"""Post-paid plans: an organization spends up to a credit limit and is invoiced monthly."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Organization, Project, User
from quotas.billing.exceptions import InvalidPlan
from quotas.billing.models import PostpaidPlan
from quotas.billing.services.accounts import billing_account_ensure_customer
from quotas.exceptions import NotFacilityAdmin
from quotas.models import Allocation, Cluster, su
from quotas.policy import cluster_refusal, is_facility_admin
from quotas.services.allocations import allocation_create
from quotas.services.ledger import ledger_credit, ledger_debit

# A credit line does not expire by itself; closing the plan ends it.
PLAN_YEARS = 10


def _check_admin(actor: User, what: str) -> None:
    if not is_facility_admin(actor):
        raise NotFacilityAdmin(f"Only facility admins may {what}")


def _limit(value: Decimal | int | str) -> Decimal:
    try:
        amount = su(value)
    except (ArithmeticError, ValueError, TypeError):
        raise InvalidPlan("credit_limit must be a number of SU", field="credit_limit") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidPlan("credit_limit must be greater than zero", field="credit_limit")
    return amount


def postpaid_plan_open(
    *, actor: User, organization: Organization, project: Project, credit_limit: Decimal
) -> PostpaidPlan:
    """Opt an organization into post-paid billing (facility admins decide the credit limit).

    Makes sure the organization has a Stripe customer, then creates a `postpaid` allocation
    on `project` credited with the limit, on every enabled cluster the project may use.
    Opening again with a new limit moves the allocation's credit to the new limit.
    """
    _check_admin(actor, "open post-paid plans")
    limit = _limit(credit_limit)
    if project.organization_id != organization.pk:
        raise InvalidPlan(
            f"Project '{project.name}' is not a project of '{organization.name}'", field="project"
        )
    billing_account_ensure_customer(organization=organization)  # network: outside the transaction
    return _plan_open(actor=actor, organization=organization, project=project, limit=limit)


@transaction.atomic
def _plan_open(
    *, actor: User, organization: Organization, project: Project, limit: Decimal
) -> PostpaidPlan:
    plan = PostpaidPlan.objects.select_for_update().filter(organization=organization).first()
    if plan is not None and plan.active and plan.allocation is not None:
        if plan.project_id != project.pk:
            raise InvalidPlan(
                "The organization already has a post-paid plan on another project; close it first",
                field="project",
            )
        return _set_limit(plan, limit)
    clusters = [
        c for c in Cluster.objects.filter(enabled=True) if cluster_refusal(c, project) is None
    ]
    now = timezone.now()
    allocation = allocation_create(
        actor=None,
        project=project,
        kind=Allocation.Kind.POSTPAID,
        clusters=clusters,
        starts_at=now,
        ends_at=now + timedelta(days=365 * PLAN_YEARS),
        memo=f"Post-paid credit line of {organization.name}",
    )
    if plan is None:
        plan = PostpaidPlan(organization=organization, created_by=actor)
    plan.project, plan.allocation, plan.credit_limit, plan.active = project, allocation, limit, True
    plan.save()
    ledger_credit(
        actor=actor,
        allocation=allocation,
        amount=limit,
        key=f"postpaid:{allocation.uuid}:open",
        memo="Post-paid credit limit",
    )
    return plan


def _set_limit(plan: PostpaidPlan, limit: Decimal) -> PostpaidPlan:
    if plan.allocation_id is None:
        raise InvalidPlan("The plan has no allocation", field="organization")
    allocation = Allocation.objects.select_for_update().get(pk=plan.allocation_id)
    # The limit is what may be in use at once: credited = limit + what was already spent.
    target = limit + allocation.charged
    delta = target - allocation.credited
    key = f"postpaid:{allocation.uuid}:limit:{uuid.uuid4()}"
    if delta > 0:
        ledger_credit(
            actor=None, allocation=allocation, amount=delta, key=key, memo="Credit limit raised"
        )
    elif delta < 0:
        entry = ledger_debit(
            actor=None, allocation=allocation, amount=-delta, key=key, memo="Credit limit lowered"
        )
        if entry is None or entry.amount < -delta:
            raise InvalidPlan(
                f"Cannot lower the limit to {limit} SU: {allocation.held} SU are held by "
                "running jobs",
                field="credit_limit",
            )
    plan.credit_limit = limit
    plan.save(update_fields=["credit_limit", "updated_at"])
    return plan


@transaction.atomic
def postpaid_plan_close(*, actor: User, plan: PostpaidPlan) -> PostpaidPlan:
    """End a post-paid plan: what is unspent is withdrawn (running jobs still settle)."""
    _check_admin(actor, "close post-paid plans")
    locked = PostpaidPlan.objects.select_for_update().get(pk=plan.pk)
    if not locked.active:
        return locked
    if locked.allocation is not None:
        ledger_debit(
            actor=None,
            allocation=locked.allocation,
            amount=locked.allocation.credited,
            key=f"postpaid:{locked.allocation.uuid}:close",
            memo="Post-paid plan closed",
        )
    locked.active = False
    locked.save(update_fields=["active", "updated_at"])
    return locked
