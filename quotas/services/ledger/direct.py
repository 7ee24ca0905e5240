"""Direct charges: work that ran without a hold (found in the scheduler's accounting) is
charged at once, as holds placed and settled in the same transaction on each eligible
allocation it takes from, never more than is available."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Project, User
from quotas.models import ZERO, Allocation, Cluster, Hold, LedgerEntry
from quotas.services.ledger.amounts import actual_amount
from quotas.services.ledger.holds import insert_holds
from quotas.services.ledger.posting import move_counters_by
from quotas.services.ledger.thresholds import notify_thresholds


@dataclass(frozen=True)
class DirectCharge:
    """What a direct charge did: `charged` out of `holds` (one settled hold per allocation it
    took from), `uncovered` the part of `amount` no allocation could cover."""

    amount: Decimal
    charged: Decimal
    uncovered: Decimal
    holds: tuple[Hold, ...]


# One direct charge: (project, amount, key, job uuid, memo).
DirectItem = tuple[Project, Decimal, str, "uuid.UUID | None", str]


def ledger_charge_direct(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    amount: Decimal,
    key: str,
    job_uuid: uuid.UUID | None = None,
    memo: str = "",
) -> DirectCharge:
    """Charge work that ran without a hold (found in the scheduler's accounting) at once: a
    hold placed and settled in one transaction on each eligible allocation it takes from,
    earliest-ending first, never more than is available; the rest is returned as `uncovered`.
    Same key -> the first charge (its holds are keyed `key`, `key:2`, ...), even when racing."""
    return ledger_charge_direct_many(
        actor=actor, cluster=cluster, charges=[(project, amount, key, job_uuid, memo)]
    )[0]


@transaction.atomic
def ledger_charge_direct_many(
    *, actor: User | None, cluster: Cluster, charges: Sequence[DirectItem]
) -> list[DirectCharge]:
    """ledger_charge_direct for many charges on one cluster, in order, in a handful of
    statements whatever their number: the eligible allocations of all their projects are
    locked at once (in the order every multi-allocation writer takes them), each charge takes
    from its project's allocations earliest-ending first, and each allocation's counters move
    in one UPDATE. A charge under a key already used returns the first charge."""
    items = [
        (project, actual_amount(amount), key, job_uuid, memo)
        for project, amount, key, job_uuid, memo in charges
    ]
    if not items:
        return []
    now = timezone.now()
    link = Allocation.clusters.through
    allocations = list(
        Allocation.objects.select_for_update(no_key=True)
        .filter(
            project_id__in={project.pk for project, *_ in items},
            status=Allocation.Status.ACTIVE,
            starts_at__lte=now,
            ends_at__gt=now,
            pk__in=link.objects.filter(cluster=cluster).values("allocation_id"),
        )
        .order_by("ends_at", "id")
    )
    # Read after the locks: a concurrent call with the same keys has committed by now.
    done = set(
        Hold.objects.filter(key__in=[key for _, _, key, _, _ in items]).values_list(
            "key", flat=True
        )
    )
    left = {a.pk: a.available for a in allocations}
    holds: list[Hold] = []
    memos: list[str] = []
    out: list[DirectCharge | str] = []
    for project, value, key, job_uuid, memo in items:
        if key in done:
            out.append(key)
            continue
        done.add(key)  # a key repeated within the call charges once
        remaining = value
        mine: list[Hold] = []
        for allocation in allocations:
            take = min(remaining, left[allocation.pk])
            if allocation.project_id != project.pk or take <= 0:
                continue
            hold = Hold(
                allocation=allocation,
                cluster=cluster,
                amount=take,
                charged=take,
                released=ZERO,
                state=Hold.State.SETTLED,
                job_uuid=job_uuid,
                key=key if not mine else f"{key}:{len(mine) + 1}",
                created_at=now,
                settled_at=now,
            )
            left[allocation.pk] -= take
            remaining -= take
            mine.append(hold)
            if remaining <= 0:
                break
        holds += mine
        memos += [memo] * len(mine)
        out.append(
            DirectCharge(
                amount=value, charged=value - remaining, uncovered=remaining, holds=tuple(mine)
            )
        )
    # hold then charge: held goes up and down by each hold's amount and charged up by it, so
    # the counters' rules and reconcile_ledger hold as for any settled hold.
    entries = insert_holds(
        holds, actor=actor, memos=memos, kinds=(LedgerEntry.Kind.HOLD, LedgerEntry.Kind.CHARGE)
    )
    for allocation in move_counters_by(allocations, entries, actor=actor):
        notify_thresholds(allocation)
    return [
        result if isinstance(result, DirectCharge) else _direct_charge(result, items[i][1])
        for i, result in enumerate(out)
    ]


def _direct_charge(key: str, amount: Decimal) -> DirectCharge:
    """The charge already made under `key` (its first hold carries the key itself)."""
    holds: list[Hold] = []
    while more := Hold.objects.filter(key=key if not holds else f"{key}:{len(holds) + 1}").first():
        holds.append(more)
    charged = sum((h.charged for h in holds), ZERO)
    return DirectCharge(
        amount=amount, charged=charged, uncovered=max(amount - charged, ZERO), holds=tuple(holds)
    )
