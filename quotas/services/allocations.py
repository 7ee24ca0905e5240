"""Allocations' life: creation, suspension, resumption, extension and the daily expiry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Project, User
from quotas import notifications
from quotas.exceptions import AllocationStateError, InvalidRequest, NotFacilityAdmin
from quotas.models import Allocation, Cluster, LedgerEntry
from quotas.policy import cluster_refusal, is_facility_admin
from quotas.services.ledger import ledger_credit
from quotas.services.ledger.posting import lock_allocation, post, refresh_status

# Days before the end at which the PI is reminded, most distant first; each goes once.
EXPIRY_REMINDERS = (30, 7)


def _authorize(actor: User | None, what: str) -> None:
    """`actor` None is the system (tasks, webhooks); a person must be a facility admin."""
    if actor is not None and not is_facility_admin(actor):
        raise NotFacilityAdmin(f"Only facility admins may {what}")


def _attribute(allocation: Allocation, actor: User | None) -> None:
    if actor is not None:
        allocation._history_user = actor


def check_clusters(*, project: Project, clusters: Iterable[Cluster]) -> list[Cluster]:
    """The clusters, if the project may use every one of them; else 400 naming `clusters`."""
    chosen = list(clusters)
    if not chosen:
        raise InvalidRequest("Choose at least one cluster", field="clusters")
    refusals = [reason for c in chosen if (reason := cluster_refusal(c, project))]
    if refusals:
        raise InvalidRequest(
            f"Project '{project.name}' may not use: {'; '.join(refusals)}", field="clusters"
        )
    return chosen


@transaction.atomic
def allocation_create(
    *,
    actor: User | None,
    project: Project,
    kind: str,
    clusters: Iterable[Cluster],
    ends_at: datetime,
    starts_at: datetime | None = None,
    amount: Decimal | None = None,
    memo: str = "",
    key: str | None = None,
) -> Allocation:
    """Create an allocation on clusters the project may use and credit `amount` (if any).

    `key` makes the initial credit idempotent (default: derived from the new allocation).
    """
    _authorize(actor, "create allocations")
    if kind not in Allocation.Kind.values:
        raise InvalidRequest(
            f"kind must be one of {', '.join(Allocation.Kind.values)}", field="kind"
        )
    chosen = check_clusters(project=project, clusters=clusters)
    starts_at = starts_at or timezone.now()
    if ends_at <= starts_at:
        raise InvalidRequest("The end must be after the start", field="ends_at")
    if ends_at <= timezone.now():
        raise InvalidRequest("The end must be in the future", field="ends_at")
    allocation = Allocation(
        project=project, kind=kind, starts_at=starts_at, ends_at=ends_at, memo=memo[:500]
    )
    _attribute(allocation, actor)
    allocation.save()
    allocation.clusters.set(chosen)
    if amount is not None:
        ledger_credit(
            actor=actor,
            allocation=allocation,
            amount=amount,
            key=key or f"allocation:{allocation.uuid}:initial",
            memo=memo or f"Initial {allocation.get_kind_display().lower()} credit",
        )
    return allocation


@transaction.atomic
def allocation_suspend(*, actor: User | None, allocation: Allocation, reason: str) -> Allocation:
    """Stop new holds on the allocation (running jobs keep their holds and settle normally).

    The reason is shown to the project and returned in 402 `allocation_suspended` answers.
    Suspending a suspended allocation updates the reason.
    """
    _authorize(actor, "suspend allocations")
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("A reason is required to suspend an allocation", field="reason")
    locked = lock_allocation(allocation)
    if locked.status == Allocation.Status.EXPIRED:
        raise AllocationStateError(
            f"Allocation {locked.uuid} is expired and cannot be suspended", state=locked.status
        )
    locked.status = Allocation.Status.SUSPENDED
    locked.status_reason = reason[:500]
    _attribute(locked, actor)
    locked.save(update_fields=["status", "status_reason"])
    allocation.status, allocation.status_reason = locked.status, locked.status_reason
    return locked


@transaction.atomic
def allocation_resume(*, actor: User | None, allocation: Allocation) -> Allocation:
    """Lift a suspension: the allocation is active again (or exhausted, if nothing is left)."""
    _authorize(actor, "resume allocations")
    locked = lock_allocation(allocation)
    if locked.status != Allocation.Status.SUSPENDED:
        raise AllocationStateError(
            f"Allocation {locked.uuid} is {locked.status}, not suspended", state=locked.status
        )
    locked.status = Allocation.Status.ACTIVE
    locked.status_reason = ""
    _attribute(locked, actor)
    locked.save(update_fields=["status", "status_reason"])
    refresh_status(locked, actor=actor)
    allocation.status, allocation.status_reason = locked.status, locked.status_reason
    return locked


@transaction.atomic
def allocation_extend(
    *, actor: User | None, allocation: Allocation, ends_at: datetime
) -> Allocation:
    """Move the end later. An expired allocation becomes active again with what it holds;
    the SU that expired stay expired (credit or adjust to add new ones)."""
    _authorize(actor, "extend allocations")
    locked = lock_allocation(allocation)
    if ends_at <= locked.ends_at:
        raise InvalidRequest(
            f"The new end must be after the current end ({locked.ends_at:%Y-%m-%d %H:%M} UTC)",
            field="ends_at",
        )
    if ends_at <= timezone.now():
        raise InvalidRequest("The new end must be in the future", field="ends_at")
    locked.ends_at = ends_at
    fields = ["ends_at", "notified"]
    # Reminders are about the old end date; the new one earns its own.
    locked.notified = [n for n in locked.notified if not n.startswith("expiry-")]
    if locked.status == Allocation.Status.EXPIRED:
        locked.status = Allocation.Status.ACTIVE
        locked.status_reason = ""
        fields += ["status", "status_reason"]
    _attribute(locked, actor)
    locked.save(update_fields=fields)
    refresh_status(locked, actor=actor)
    allocation.ends_at, allocation.status = locked.ends_at, locked.status
    allocation.notified = locked.notified
    return locked


@dataclass(frozen=True)
class ExpiryResult:
    expired: int
    expired_su: Decimal
    reminded: int


def allocations_expire(*, now: datetime | None = None) -> ExpiryResult:
    """The daily run: expire allocations past their end and remind PIs 30 and 7 days ahead.

    Expiry takes only what is `available` (an `expire` entry); SU still held by running jobs
    stay held and expire when their hold settles. Each allocation is its own transaction.
    """
    now = now or timezone.now()
    expired, expired_su, reminded = 0, Decimal(0), 0
    due = Allocation.objects.filter(ends_at__lte=now).exclude(status=Allocation.Status.EXPIRED)
    for pk in due.values_list("pk", flat=True).order_by("ends_at", "id"):
        amount = _expire_one(pk, now=now)
        if amount is not None:
            expired += 1
            expired_su += amount
    soon = Allocation.objects.filter(
        status=Allocation.Status.ACTIVE,
        ends_at__gt=now,
        ends_at__lte=now + timedelta(days=max(EXPIRY_REMINDERS)),
    )
    for pk in soon.values_list("pk", flat=True).order_by("ends_at", "id"):
        reminded += _remind_one(pk, now=now)
    return ExpiryResult(expired=expired, expired_su=expired_su, reminded=reminded)


@transaction.atomic
def _expire_one(pk: int, *, now: datetime) -> Decimal | None:
    locked = Allocation.objects.select_for_update().get(pk=pk)
    if locked.status == Allocation.Status.EXPIRED or locked.ends_at > now:
        return None  # someone extended or expired it meanwhile
    amount = locked.available
    if amount > 0:
        post(
            locked,
            kind=LedgerEntry.Kind.EXPIRE,
            amount=amount,
            # The end is part of the key: an extended allocation can expire again later.
            key=f"expire:{locked.uuid}:{locked.ends_at.isoformat()}",
            actor=None,
            memo=f"Unspent SU expired at the end of the allocation ({locked.ends_at:%Y-%m-%d})",
        )
    locked.status = Allocation.Status.EXPIRED
    locked.status_reason = f"Ended on {locked.ends_at:%Y-%m-%d %H:%M} UTC"
    locked.save(update_fields=["status", "status_reason"])
    return amount


@transaction.atomic
def _remind_one(pk: int, *, now: datetime) -> int:
    locked = Allocation.objects.select_for_update().select_related("project").get(pk=pk)
    if locked.status != Allocation.Status.ACTIVE or locked.ends_at <= now:
        return 0
    left = locked.ends_at - now
    due = [d for d in EXPIRY_REMINDERS if left <= timedelta(days=d)]
    unsent = [d for d in due if f"expiry-{d}" not in locked.notified]
    if not unsent:
        return 0
    # One email (the most urgent due reminder); the others due now count as sent.
    locked.notified = [*locked.notified, *(f"expiry-{d}" for d in unsent)]
    Allocation.objects.filter(pk=pk).update(notified=locked.notified)
    days_left = max(1, left.days + (1 if left.seconds else 0))
    notifications.expiry_reminder(allocation=locked, days=days_left)
    return 1
