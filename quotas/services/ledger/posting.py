"""Posting: every counter change is made in the same transaction as its entry, under a row
lock on the allocation. Rules are in quotas/models.py's docstring (EFFECTS there is the same
table as data); reconcile proves them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F

from accounts.models import User
from quotas.exceptions import AllocationStateError
from quotas.models import EFFECTS, ZERO, Allocation, Cluster, Hold, LedgerEntry


def lock_allocation(allocation: Allocation) -> Allocation:
    """The allocation's current row, locked until the transaction ends."""
    # NO KEY UPDATE: enough to change counters, and it does not block other transactions'
    # inserts that merely reference the allocation (ledger entries, holds).
    return Allocation.objects.select_for_update(no_key=True).get(pk=allocation.pk)


def post(
    allocation: Allocation,
    *,
    kind: str,
    amount: Decimal,
    key: str,
    actor: User | None,
    memo: str = "",
    job_uuid: uuid.UUID | None = None,
    hold: Hold | None = None,
    cluster: Cluster | None = None,
) -> LedgerEntry:
    """Append one entry and move the allocation's counters by it. Caller holds the row lock.

    Also moves an active allocation to `exhausted` when nothing is left and nothing is held,
    and back to `active` when SU come back.
    """
    c, h, ch = EFFECTS[kind]
    entry = LedgerEntry.objects.create(
        allocation=allocation,
        kind=kind,
        amount=amount,
        idempotency_key=key,
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
        hold=hold,
        cluster=cluster,
    )
    Allocation.objects.filter(pk=allocation.pk).update(
        credited=F("credited") + c * amount,
        held=F("held") + h * amount,
        charged=F("charged") + ch * amount,
    )
    allocation.credited += c * amount
    allocation.held += h * amount
    allocation.charged += ch * amount
    if kind != LedgerEntry.Kind.EXPIRE:
        refresh_status(allocation, actor=actor)
    return entry


def post_once(
    allocation: Allocation,
    *,
    kind: str,
    amount: Decimal,
    key: str,
    actor: User | None,
    memo: str = "",
    job_uuid: uuid.UUID | None = None,
    hold: Hold | None = None,
    cluster: Cluster | None = None,
) -> tuple[LedgerEntry, bool]:
    """post, or the entry already stored under the same key (a concurrent duplicate)."""
    try:
        with transaction.atomic():
            entry = post(
                allocation,
                kind=kind,
                amount=amount,
                key=key,
                actor=actor,
                memo=memo,
                job_uuid=job_uuid,
                hold=hold,
                cluster=cluster,
            )
            return entry, True
    except IntegrityError:
        existing = LedgerEntry.objects.filter(idempotency_key=key).first()
        if existing is None:
            raise
        return existing, False


def counter_deltas(entries: Iterable[tuple[str, Decimal]]) -> tuple[Decimal, Decimal, Decimal]:
    """How entries of these (kind, amount) move (credited, held, charged), summed."""
    deltas = [ZERO, ZERO, ZERO]
    for kind, amount in entries:
        for i, factor in enumerate(EFFECTS[kind]):
            deltas[i] += factor * amount
    return deltas[0], deltas[1], deltas[2]


def post_many(
    allocation: Allocation, entries: list[LedgerEntry], *, actor: User | None
) -> list[LedgerEntry]:
    """Append several entries at once and move the counters by their sum in one UPDATE.

    Same rules and lock as post: the caller holds the allocation's row lock.
    """
    if not entries:
        return []
    created = LedgerEntry.objects.bulk_create(entries)
    move_counters(allocation, *counter_deltas((e.kind, e.amount) for e in entries), actor=actor)
    return created


def move_counters_by(
    allocations: Sequence[Allocation], entries: Iterable[LedgerEntry], *, actor: User | None
) -> list[Allocation]:
    """Move the counters of the locked `allocations` by the entries just inserted on them: one
    UPDATE per allocation that has any (those are returned, in the order given)."""
    mine: dict[int, list[tuple[str, Decimal]]] = defaultdict(list)
    for entry in entries:
        mine[entry.allocation_id].append((entry.kind, entry.amount))
    moved = [allocation for allocation in allocations if allocation.pk in mine]
    for allocation in moved:
        move_counters(allocation, *counter_deltas(mine[allocation.pk]), actor=actor)
    return moved


def move_counters(
    allocation: Allocation,
    credited: Decimal,
    held: Decimal,
    charged: Decimal,
    *,
    actor: User | None,
) -> None:
    """Move the counters of the locked `allocation` by these deltas in one UPDATE and refresh
    its status. Only for entries the caller writes in the same transaction (post_many,
    move_counters_by, and ledger_settle_many, which inserts its entries as plain values)."""
    Allocation.objects.filter(pk=allocation.pk).update(
        credited=F("credited") + credited,
        held=F("held") + held,
        charged=F("charged") + charged,
    )
    allocation.credited += credited
    allocation.held += held
    allocation.charged += charged
    refresh_status(allocation, actor=actor)


def refresh_status(allocation: Allocation, *, actor: User | None) -> None:
    """active <-> exhausted from the (locked, current) counters; other statuses are left alone."""
    if allocation.status not in (Allocation.Status.ACTIVE, Allocation.Status.EXHAUSTED):
        return
    empty = allocation.available <= 0 and allocation.held <= 0 and allocation.credited > 0
    wanted = Allocation.Status.EXHAUSTED if empty else Allocation.Status.ACTIVE
    if wanted != allocation.status:
        allocation.status = wanted
        if actor is not None:
            allocation._history_user = actor
        allocation.save(update_fields=["status"])


def copy_counters(target: Allocation, source: Allocation) -> None:
    """Give the caller's instance the counters and status of the locked row it was posted on."""
    target.credited, target.held, target.charged = source.credited, source.held, source.charged
    target.status, target.notified = source.status, source.notified


def refuse_expired(allocation: Allocation, what: str) -> None:
    """AllocationStateError (409) when `allocation` is expired: extend it first."""
    if allocation.status == Allocation.Status.EXPIRED:
        raise AllocationStateError(
            f"Cannot {what} allocation {allocation.uuid}: it is expired (extend it first)",
            state=allocation.status,
        )
