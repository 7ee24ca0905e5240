"""Direct charges: work that ran without a hold (found in a scheduler's accounting) charged at
once, never beyond what is available, exactly once per key."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core import mail

from quotas.models import Allocation, Hold, LedgerEntry
from quotas.services import (
    allocation_suspend,
    ledger_charge_direct,
    ledger_charge_direct_many,
    ledger_credit,
)
from tests import factories
from tests.quotas.conftest import assert_reconciles


def charge(tenant, cluster, amount, key):
    return ledger_charge_direct(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(amount), key=key
    )


def test_a_direct_charge_is_a_hold_settled_at_once(allocation, tenant, cluster):
    result = charge(tenant, cluster, "12.5", "direct:1:100")

    assert (result.charged, result.uncovered) == (Decimal("12.5"), 0)
    allocation.refresh_from_db()
    assert (allocation.held, allocation.charged) == (0, Decimal("12.5"))
    [hold] = result.holds
    assert (hold.key, hold.state, hold.amount, hold.charged, hold.released) == (
        "direct:1:100",
        Hold.State.SETTLED,
        Decimal("12.5"),
        Decimal("12.5"),
        0,
    )
    kinds = list(LedgerEntry.objects.filter(hold=hold).values_list("kind", "idempotency_key"))
    assert kinds == [("hold", "direct:1:100:hold"), ("charge", "direct:1:100:charge")]
    assert_reconciles()


def test_the_same_key_charges_once(allocation, tenant, cluster):
    first = charge(tenant, cluster, "30", "direct:1:7")
    again = charge(tenant, cluster, "30", "direct:1:7")
    batch = ledger_charge_direct_many(
        actor=None,
        cluster=cluster,
        charges=[(tenant.project, Decimal("5"), "direct:1:8", None, "")] * 2,
    )

    assert again.holds == first.holds and again.charged == Decimal("30")
    assert [b.charged for b in batch] == [Decimal("5"), Decimal("5")]
    assert batch[0].holds == batch[1].holds
    allocation.refresh_from_db()
    assert allocation.charged == Decimal("35")
    assert_reconciles()


def test_a_charge_beyond_what_is_available_takes_it_all_earliest_ending_first_and_no_more(
    allocation, tenant, cluster, django_capture_on_commit_callbacks
):
    later = factories.AllocationFactory(
        project=tenant.project, clusters=[cluster], ends_at=allocation.ends_at + timedelta(days=9)
    )
    ledger_credit(actor=None, allocation=later, amount=Decimal("50"), key="later")
    elsewhere = factories.AllocationFactory(
        project=tenant.project, clusters=[factories.ClusterFactory(name="other")]
    )
    ledger_credit(actor=None, allocation=elsewhere, amount=Decimal("500"), key="elsewhere")
    ledger_charge_direct_many(
        actor=None, cluster=cluster, charges=[(tenant.project, Decimal("900"), "first", None, "")]
    )

    with django_capture_on_commit_callbacks(execute=True):
        result = charge(tenant, cluster, "300", "second")

    # 100 left on the first allocation, 50 on the later one; the other cluster's is untouched.
    assert (result.charged, result.uncovered) == (Decimal("150"), Decimal("150"))
    assert [h.key for h in result.holds] == ["second", "second:2"]
    for alloc, charged in ((allocation, "1000"), (later, "50"), (elsewhere, "0")):
        alloc.refresh_from_db()
        assert alloc.charged == Decimal(charged)
    assert allocation.status == later.status == Allocation.Status.EXHAUSTED
    assert any("100 % of an allocation used" in message.subject for message in mail.outbox)
    assert_reconciles()


def test_suspended_allocations_are_not_charged(allocation, tenant, cluster, alice, dave):
    allocation_suspend(actor=dave, allocation=allocation, reason="audit")

    result = charge(tenant, cluster, "10", "direct:1:9")

    assert (result.charged, result.uncovered, result.holds) == (0, Decimal("10"), ())
    allocation.refresh_from_db()
    assert allocation.charged == 0
    assert_reconciles()
