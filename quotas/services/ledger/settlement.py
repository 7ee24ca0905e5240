"""Settlement: a hold is charged what the work cost (at most the hold) and the rest released,
exactly once, one hold at a time (ledger_settle) or thousands per statement (ledger_settle_many,
for job sync). Both write the same entries, keys and counter effects."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from quotas.models import EFFECTS, ZERO, Allocation, Hold, LedgerEntry
from quotas.services.batch import bulk_insert, bulk_set
from quotas.services.ledger.amounts import actual_amount
from quotas.services.ledger.posting import lock_allocation, move_counters, post_many
from quotas.services.ledger.thresholds import notify_thresholds


def settle_parts(
    amount: Decimal, actual: Decimal, *, expired: bool, memo: str
) -> tuple[Decimal, Decimal, list[tuple[str, Decimal, str]]]:
    """What settling a hold of `amount` at `actual` writes: (charge, release, the entries as
    (kind, amount, memo), none of zero). The charge is at most the hold; on an allocation that
    expired while the hold was open, what comes back expires at once (it was never available).
    The entries' keys are "<hold key>:<kind>"."""
    charge = min(actual, amount)
    release = amount - charge
    parts = [(LedgerEntry.Kind.CHARGE, charge, memo), (LedgerEntry.Kind.RELEASE, release, memo)]
    if expired:
        parts.append((LedgerEntry.Kind.EXPIRE, release, "Released after the allocation expired"))
    return charge, release, [(str(kind), value, text) for kind, value, text in parts if value > 0]


def settlement_entries(
    allocation: Allocation, hold: Hold, actual: Decimal, *, actor: User | None, memo: str
) -> tuple[Decimal, Decimal, list[LedgerEntry]]:
    """settle_parts of `hold` as LedgerEntry instances: (charge, release, entries)."""
    charge, release, parts = settle_parts(
        hold.amount, actual, expired=allocation.status == Allocation.Status.EXPIRED, memo=memo
    )
    entries = [
        LedgerEntry(
            allocation=allocation,
            kind=kind,
            amount=value,
            idempotency_key=f"{hold.key}:{kind}",
            actor=actor,
            memo=text,
            job_uuid=hold.job_uuid,
            hold=hold,
            cluster_id=hold.cluster_id,
        )
        for kind, value, text in parts
    ]
    return charge, release, entries


@transaction.atomic
def ledger_settle(*, actor: User | None, hold: Hold, actual: Decimal, memo: str = "") -> Hold:
    """Charge min(actual, held) out of the hold and release the rest, exactly once.

    Settling an already settled hold changes nothing and returns it. What is released on an
    allocation that expired while the hold was open expires at once (it was never available).
    """
    actual_value = actual_amount(actual)
    locked_hold = Hold.objects.select_for_update(no_key=True).get(pk=hold.pk)
    if locked_hold.state == Hold.State.SETTLED:
        return locked_hold
    allocation = lock_allocation(Allocation(pk=locked_hold.allocation_id))
    charge, release, entries = settlement_entries(
        allocation, locked_hold, actual_value, actor=actor, memo=memo
    )
    post_many(allocation, entries, actor=actor)
    locked_hold.charged = charge
    locked_hold.released = release
    locked_hold.state = Hold.State.SETTLED
    locked_hold.settled_at = timezone.now()
    locked_hold.save(update_fields=["charged", "released", "state", "settled_at"])
    hold.charged, hold.released, hold.state = charge, release, Hold.State.SETTLED
    hold.settled_at = locked_hold.settled_at
    if charge > 0:
        notify_thresholds(allocation)
    return locked_hold


class SettledHold(NamedTuple):
    """A hold as ledger_settle_many leaves it (settled now or before)."""

    pk: int
    allocation_id: int
    charged: Decimal
    released: Decimal


# The columns of the entries ledger_settle_many inserts, one tuple per entry (actor and
# created_at are the same for the whole batch).
_ENTRY_FIELDS = (
    "allocation_id",
    "kind",
    "amount",
    "memo",
    "cluster_id",
    "hold_id",
    "job_uuid",
    "idempotency_key",
)


@transaction.atomic
def ledger_settle_many(
    *, actor: User | None, settlements: Sequence[tuple[Hold | int, Decimal]], memo: str = ""
) -> dict[int, SettledHold]:
    """Charge min(actual, held) out of each hold (a Hold or its pk) and release the rest, each
    exactly once. Returns {hold pk: the hold as settled}; holds settled before come back as
    they were. Each hold is settled exactly as ledger_settle would (same entries, keys and
    counter effects, expiry after an expired allocation, thresholds after charges) in a fixed
    number of statements: one row lock per hold and per allocation, one UPDATE of the holds,
    one INSERT of the entries and one counter update per allocation, all from plain values.
    """
    actuals: dict[int, Decimal] = {}
    for hold, actual in settlements:
        actuals[hold if isinstance(hold, int) else hold.pk] = actual_amount(actual)
    if not actuals:
        return {}
    # The same locks as ledger_settle, taken in one consistent order (holds by pk, then
    # allocations by ends_at, id) so concurrent batches never deadlock. A hold already settled
    # (by another sync, a cancel) is seen here under its lock and left alone.
    rows = list(
        Hold.objects.select_for_update(no_key=True)
        .filter(pk__any=list(actuals))
        .order_by("pk")
        .values_list(
            "pk", "allocation_id", "state", "amount", "charged", "released", "cluster_id",
            "job_uuid", "key",
        )
    )  # fmt: skip
    settled: dict[int, SettledHold] = {}
    to_settle = []
    for row in rows:
        if row[2] == Hold.State.SETTLED:
            settled[row[0]] = SettledHold(row[0], row[1], row[4], row[5])
        else:
            to_settle.append(row)
    if not to_settle:
        return settled
    allocations = list(
        Allocation.objects.select_for_update(no_key=True)
        .filter(pk__in={row[1] for row in to_settle})
        .order_by("ends_at", "id")
    )
    expired = {a.pk for a in allocations if a.status == Allocation.Status.EXPIRED}
    deltas = {a.pk: [ZERO, ZERO, ZERO] for a in allocations}
    charged_on: set[int] = set()
    holds: list[tuple[int, Decimal, Decimal]] = []
    entries: list[tuple[Any, ...]] = []
    for pk, allocation_id, _, amount, _, _, cluster_id, job_uuid, key in to_settle:
        charge, release, parts = settle_parts(
            amount, actuals[pk], expired=allocation_id in expired, memo=memo
        )
        delta = deltas[allocation_id]
        for kind, value, text in parts:
            entries.append(
                (allocation_id, kind, value, text, cluster_id, pk, job_uuid, f"{key}:{kind}")
            )
            for i, factor in enumerate(EFFECTS[kind]):
                delta[i] += factor * value
        if charge > 0:
            charged_on.add(allocation_id)
        holds.append((pk, charge, release))
        settled[pk] = SettledHold(pk, allocation_id, charge, release)
    now = timezone.now()
    bulk_set(
        Hold,
        ("charged", "released"),
        holds,
        constants={"state": Hold.State.SETTLED, "settled_at": now},
    )
    bulk_insert(
        LedgerEntry,
        _ENTRY_FIELDS,
        entries,
        constants={"actor_id": actor.pk if actor is not None else None, "created_at": now},
    )
    for allocation in allocations:
        move_counters(allocation, *deltas[allocation.pk], actor=actor)
    for allocation in allocations:
        if allocation.pk in charged_on:
            notify_thresholds(allocation)
    return settled
