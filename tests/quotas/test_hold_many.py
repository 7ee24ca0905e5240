"""ledger_hold_many: the holds of one submission in a few statements, exactly as N ledger_hold
calls would place them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from quotas.exceptions import AllocationSuspended, InsufficientQuotaForBatch
from quotas.models import Hold, LedgerEntry
from quotas.reconcile import reconcile_ledger
from quotas.services import (
    allocation_suspend,
    ledger_credit,
    ledger_hold,
    ledger_hold_many,
    ledger_settle,
)
from tests import factories
from tests.quotas.conftest import counters, ledger_sums

AMOUNTS = ["15", "15", "4", "30", "1", "5"]


def two_allocations(tenant, cluster, *, sooner_su="20", later_su="60"):
    """A sooner-ending and a later-ending allocation on the same cluster, both credited."""
    sooner = factories.AllocationFactory(
        project=tenant.project, clusters=[cluster], ends_at=timezone.now() + timedelta(days=10)
    )
    later = factories.AllocationFactory(
        project=tenant.project, clusters=[cluster], ends_at=timezone.now() + timedelta(days=300)
    )
    ledger_credit(actor=None, allocation=sooner, amount=Decimal(sooner_su), key=f"c-{sooner.pk}")
    ledger_credit(actor=None, allocation=later, amount=Decimal(later_su), key=f"c-{later.pk}")
    return sooner, later


def spec(amounts, prefix="job"):
    return [
        (Decimal(a), f"{prefix}-{i}", uuid.UUID(int=i + 1), f"Job {i}")
        for i, a in enumerate(amounts)
    ]


def place_many(tenant, cluster, holds, actor=None):
    return ledger_hold_many(actor=actor, project=tenant.project, cluster=cluster, holds=holds)


def place_one_by_one(tenant, cluster, holds, actor=None):
    with transaction.atomic():
        return [
            ledger_hold(
                actor=actor,
                project=tenant.project,
                cluster=cluster,
                amount=amount,
                key=key,
                job_uuid=job_uuid,
                memo=memo,
            )
            for amount, key, job_uuid, memo in holds
        ]


def ledger_state(allocations, holds):
    """What a run left behind, free of ids: counters and status per allocation, each hold's
    allocation, amount, key, job and state, and every hold entry's fields."""
    names = {a.pk: i for i, a in enumerate(allocations)}
    stored = Hold.objects.in_bulk([h.pk for h in holds])
    return (
        [(*counters(a), a.status) for a in allocations],
        [
            (names[h.allocation_id], h.amount, h.key, h.job_uuid, h.state)
            for h in (stored[h.pk] for h in holds)
        ],
        sorted(
            (
                names[e.allocation_id],
                e.amount,
                e.idempotency_key,
                e.job_uuid,
                e.memo,
                e.actor_id,
                e.cluster_id,
                e.hold.key,
                e.hold.allocation_id == e.allocation_id,
            )
            for e in LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD).select_related("hold")
        ),
    )


def test_holds_spread_over_two_allocations_earliest_ending_first(tenant, cluster):
    sooner, later = two_allocations(tenant, cluster)

    holds = place_many(tenant, cluster, spec(AMOUNTS))
    report = reconcile_ledger(stale_hold_days=10_000)

    assert report.ok, report.format()
    # Each hold takes the earliest-ending allocation that still covers it: 15 fits the sooner
    # one (5 left), the next 15 does not, so it goes to the later one, 4 fits the sooner one
    # again (1 left), 30 only the later one, 1 empties the sooner one, 5 goes to the later one.
    assert [(h.allocation_id, h.amount) for h in holds] == [
        (sooner.pk, Decimal(15)),
        (later.pk, Decimal(15)),
        (sooner.pk, Decimal(4)),
        (later.pk, Decimal(30)),
        (sooner.pk, Decimal(1)),
        (later.pk, Decimal(5)),
    ]
    assert counters(sooner) == (Decimal(20), Decimal(20), 0)
    assert counters(later) == (Decimal(60), Decimal(50), 0)
    assert counters(sooner) == ledger_sums(sooner)
    assert counters(later) == ledger_sums(later)
    assert [h.key for h in Hold.objects.order_by("pk")] == [f"job-{i}" for i in range(6)]
    entries = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD)
    assert sorted(entries.values_list("idempotency_key", flat=True)) == sorted(
        f"job-{i}:hold" for i in range(6)
    )
    assert all(e.hold.allocation_id == e.allocation_id for e in entries.select_related("hold"))


def test_the_same_holds_one_by_one_leave_exactly_the_same_ledger(tenant, cluster, alice):
    allocations = two_allocations(tenant, cluster)
    with transaction.atomic():
        batched = ledger_state(allocations, place_many(tenant, cluster, spec(AMOUNTS), alice))
        transaction.set_rollback(True)  # the same setup again for the sequential run
    assert not Hold.objects.exists()

    sequential = ledger_state(allocations, place_one_by_one(tenant, cluster, spec(AMOUNTS), alice))

    assert batched == sequential
    assert len(batched[2]) == len(AMOUNTS)
    assert {placed[0] for placed in batched[1]} == {0, 1}


def test_a_batch_that_does_not_all_fit_holds_nothing_and_names_the_shortfall(tenant, cluster):
    sooner, later = two_allocations(tenant, cluster)
    before = LedgerEntry.objects.count()

    with pytest.raises(InsufficientQuotaForBatch) as refused:
        place_many(tenant, cluster, spec(["15", "15", "4", "30", "50", "1"]))

    # 15, 15 and 4 and 30 fit (64 SU; the sooner one keeps 1, the later one 15); 50 does not.
    assert refused.value.index == 4
    assert refused.value.required == Decimal(115)
    assert refused.value.available == Decimal(64) + Decimal(15)
    assert refused.value.shortfall == Decimal(115) - Decimal(79)
    assert "hold 4 did not fit" in refused.value.detail
    assert counters(sooner) == (Decimal(20), 0, 0)
    assert counters(later) == (Decimal(60), 0, 0)
    assert not Hold.objects.exists()
    assert LedgerEntry.objects.count() == before
    report = reconcile_ledger(stale_hold_days=10_000)
    assert report.ok, report.format()


def test_a_batch_only_a_suspended_allocation_could_cover_is_refused_as_suspended(
    tenant, cluster, dave
):
    sooner, later = two_allocations(tenant, cluster, sooner_su="10", later_su="100")
    allocation_suspend(actor=dave, allocation=later, reason="Audit pending")

    with pytest.raises(AllocationSuspended):
        place_many(tenant, cluster, spec(["5", "20"]))

    assert not Hold.objects.exists()
    assert counters(sooner) == (Decimal(10), 0, 0)


def test_a_repeated_key_takes_the_sequential_path_and_returns_the_first_hold(
    allocation, tenant, cluster
):
    first = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(7), key="job-1"
    )

    holds = place_many(tenant, cluster, spec(["3", "7", "2"]))

    assert holds[1].pk == first.pk
    assert [h.amount for h in holds] == [Decimal(3), Decimal(7), Decimal(2)]
    assert counters(allocation) == (Decimal(1000), Decimal(12), 0)
    assert Hold.objects.count() == 3
    assert counters(allocation) == ledger_sums(allocation)


def test_holds_placed_together_settle_one_by_one_and_reconcile(allocation, tenant, cluster):
    holds = place_many(tenant, cluster, spec(["10", "20"]))

    ledger_settle(actor=None, hold=holds[0], actual=Decimal(4))
    ledger_settle(actor=None, hold=holds[1], actual=Decimal(25))

    assert counters(allocation) == (Decimal(1000), 0, Decimal(24))
    report = reconcile_ledger()
    assert report.ok, report.format()


def test_fifty_holds_take_the_same_few_statements_as_five(allocation, tenant, cluster):
    with CaptureQueriesContext(connection) as five:
        place_many(tenant, cluster, spec(["1"] * 5, prefix="a"))
    with CaptureQueriesContext(connection) as fifty:
        place_many(tenant, cluster, spec(["1"] * 50, prefix="b"))

    assert len(fifty.captured_queries) == len(five.captured_queries) <= 6
    assert Hold.objects.count() == 55
    assert counters(allocation) == (Decimal(1000), Decimal(55), 0)
