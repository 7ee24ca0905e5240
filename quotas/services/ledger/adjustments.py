"""Balance changes outside the hold cycle: credits, refunds, staff adjustments and system
debits. Each is idempotent by its key and posts under the allocation's row lock."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import transaction

from accounts.models import User
from quotas.exceptions import InvalidAmount, NotFacilityAdmin
from quotas.models import ZERO, Allocation, Cluster, LedgerEntry
from quotas.policy import is_facility_admin
from quotas.services.ledger.amounts import positive_amount, su_amount
from quotas.services.ledger.posting import (
    copy_counters,
    lock_allocation,
    post,
    post_once,
    refuse_expired,
)
from quotas.services.ledger.thresholds import notify_thresholds, rearm_thresholds


@transaction.atomic
def ledger_credit(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str = "",
) -> LedgerEntry:
    """Add SU to an allocation. A second call with the same key returns the first entry.

    An expired allocation refuses credits (409); an exhausted one becomes active again.
    """
    value = positive_amount(amount)
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = lock_allocation(allocation)
    refuse_expired(locked, "credit")
    entry, created = post_once(
        locked, kind=LedgerEntry.Kind.CREDIT, amount=value, key=key, actor=actor, memo=memo
    )
    if created:
        rearm_thresholds(locked)
    copy_counters(allocation, locked)
    return entry


@transaction.atomic
def ledger_refund(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
    job_uuid: uuid.UUID | None = None,
    cluster: Cluster | None = None,
) -> LedgerEntry:
    """Give back SU that were charged (at most what was charged). Same key -> same entry.

    On an expired allocation the refunded SU expire at once.
    """
    value = positive_amount(amount)
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = lock_allocation(allocation)
    if value > locked.charged:
        raise InvalidAmount(
            f"Cannot refund {value} SU: only {locked.charged} SU were charged", field="amount"
        )
    entry, created = post_once(
        locked,
        kind=LedgerEntry.Kind.REFUND,
        amount=value,
        key=key,
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
        cluster=cluster,
    )
    if created and locked.status == Allocation.Status.EXPIRED:
        post(
            locked,
            kind=LedgerEntry.Kind.EXPIRE,
            amount=value,
            key=f"{key}:expire",
            actor=actor,
            memo="Refunded after the allocation expired",
            job_uuid=job_uuid,
            cluster=cluster,
        )
    copy_counters(allocation, locked)
    return entry


@transaction.atomic
def ledger_adjust(
    *,
    actor: User,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
) -> LedgerEntry:
    """Facility admin credit (+) or debit (-) with a memo; a debit never takes `available`
    below 0, and an expired allocation cannot be adjusted (extend it first)."""
    if not is_facility_admin(actor):
        raise NotFacilityAdmin("Only facility admins may adjust allocations")
    if not memo.strip():
        raise InvalidAmount("A memo is required for an adjustment", field="memo")
    value = su_amount(amount, name="amount")
    if value == 0:
        raise InvalidAmount("amount must be a non-zero number", field="amount")
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = lock_allocation(allocation)
    refuse_expired(locked, "adjust")
    if value < 0 and -value > locked.available:
        raise InvalidAmount(
            f"Cannot debit {-value} SU: only {locked.available} SU are available", field="amount"
        )
    entry, created = post_once(
        locked, kind=LedgerEntry.Kind.ADJUSTMENT, amount=value, key=key, actor=actor, memo=memo
    )
    if created:
        if value > 0:
            rearm_thresholds(locked)
        else:
            notify_thresholds(locked)
    copy_counters(allocation, locked)
    return entry


@transaction.atomic
def ledger_debit(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
) -> LedgerEntry | None:
    """Take back up to `amount` SU of what is available (an `expire` entry): never below zero,
    held and charged SU untouched. None when nothing was available; same key -> same entry.

    A system action (a Stripe refund, a post-paid limit lowered), unlike ledger_adjust.
    """
    value = su_amount(amount, name="amount")
    if value < 0:
        raise InvalidAmount("amount must not be negative", field="amount")
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = lock_allocation(allocation)
    debit = min(value, max(locked.available, ZERO))
    if debit <= 0:
        copy_counters(allocation, locked)
        return None
    entry, _ = post_once(
        locked,
        kind=LedgerEntry.Kind.EXPIRE,
        amount=debit,
        key=key,
        actor=actor,
        memo=memo[:500],
    )
    copy_counters(allocation, locked)
    return entry
