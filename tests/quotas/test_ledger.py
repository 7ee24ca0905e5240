from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core import mail

from portal.errors import PermissionDenied
from quotas.exceptions import (
    AllocationStateError,
    AllocationSuspended,
    InsufficientQuota,
    InvalidAmount,
)
from quotas.models import Allocation, Hold, LedgerEntry
from quotas.services import (
    allocation_resume,
    allocation_suspend,
    ledger_adjust,
    ledger_credit,
    ledger_debit,
    ledger_hold,
    ledger_refund,
    ledger_settle,
)
from tests import factories
from tests.quotas.conftest import assert_reconciles, counters, ledger_sums


def hold(tenant, cluster, amount, key):
    return ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(amount), key=key
    )


def test_settling_twice_charges_once_and_releases_the_rest(allocation, tenant, cluster):
    h = hold(tenant, cluster, "40", "job-a")

    ledger_settle(actor=None, hold=h, actual=Decimal("12.5"))
    ledger_settle(actor=None, hold=h, actual=Decimal("30"))

    assert counters(allocation) == (Decimal(1000), 0, Decimal("12.5"))
    h.refresh_from_db()
    assert (h.state, h.charged, h.released) == (
        Hold.State.SETTLED,
        Decimal("12.5"),
        Decimal("27.5"),
    )
    assert LedgerEntry.objects.filter(hold=h, kind=LedgerEntry.Kind.CHARGE).count() == 1
    assert counters(allocation) == ledger_sums(allocation)
    assert_reconciles()


def test_settle_never_charges_more_than_was_held(allocation, tenant, cluster):
    h = hold(tenant, cluster, "10", "job-b")

    ledger_settle(actor=None, hold=h, actual=Decimal("99"))

    assert counters(allocation) == (Decimal(1000), 0, Decimal(10))


def test_the_same_hold_key_places_one_hold(allocation, tenant, cluster):
    first = hold(tenant, cluster, "10", "job-c")
    second = hold(tenant, cluster, "10", "job-c")

    assert first.pk == second.pk
    assert counters(allocation) == (Decimal(1000), Decimal(10), 0)


def test_the_same_credit_key_credits_once(allocation):
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(5), key="k1")
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(5), key="k1")

    assert counters(allocation) == (Decimal(1005), 0, 0)


def test_hold_and_settle_entries_carry_the_cluster(allocation, tenant, cluster):
    h = hold(tenant, cluster, "10", "job-d")
    ledger_settle(actor=None, hold=h, actual=Decimal(4))

    assert h.cluster == cluster
    kinds = set(LedgerEntry.objects.filter(hold=h, cluster=cluster).values_list("kind", flat=True))
    assert kinds == {"hold", "charge", "release"}


def test_holds_go_to_the_earliest_ending_allocation_that_covers_them(allocation, tenant, cluster):
    from datetime import timedelta

    from django.utils import timezone

    sooner = factories.AllocationFactory(
        project=tenant.project, clusters=[cluster], ends_at=timezone.now() + timedelta(days=10)
    )
    ledger_credit(actor=None, allocation=sooner, amount=Decimal(20), key="sooner")

    small = hold(tenant, cluster, "15", "job-e")
    big = hold(tenant, cluster, "15", "job-f")

    assert small.allocation_id == sooner.pk
    assert big.allocation_id == allocation.pk


@pytest.mark.parametrize("amount", ["-5", "0", "abc", "NaN", "Infinity", "1e20"])
def test_bad_amounts_are_refused_and_the_ledger_is_unchanged(allocation, tenant, cluster, amount):
    with pytest.raises(InvalidAmount) as err:
        ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=amount, key="x")
    assert err.value.field == "amount"
    with pytest.raises(InvalidAmount):
        ledger_credit(actor=None, allocation=allocation, amount=amount, key="y")

    assert counters(allocation) == (Decimal(1000), 0, 0)
    assert LedgerEntry.objects.count() == 1


def test_refund_gives_back_charged_su_but_never_more(allocation, tenant, cluster):
    h = hold(tenant, cluster, "10", "job-g")
    ledger_settle(actor=None, hold=h, actual=Decimal(8))

    with pytest.raises(InvalidAmount):
        ledger_refund(actor=None, allocation=allocation, amount=Decimal(9), key="r0", memo="x")
    ledger_refund(actor=None, allocation=allocation, amount=Decimal(3), key="r1", memo="node")
    ledger_refund(actor=None, allocation=allocation, amount=Decimal(3), key="r1", memo="node")

    assert counters(allocation) == (Decimal(1000), 0, Decimal(5))
    assert_reconciles()


def test_only_facility_admins_adjust_and_a_memo_is_required(allocation, alice, dave):
    with pytest.raises(PermissionDenied):
        ledger_adjust(actor=alice, allocation=allocation, amount=Decimal(5), key="a", memo="gift")
    with pytest.raises(InvalidAmount) as err:
        ledger_adjust(actor=dave, allocation=allocation, amount=Decimal(5), key="a", memo=" ")
    assert err.value.field == "memo"

    ledger_adjust(actor=dave, allocation=allocation, amount=Decimal(-250), key="a", memo="fix")

    assert counters(allocation) == (Decimal(750), 0, 0)
    entry = LedgerEntry.objects.get(idempotency_key="a")
    assert (entry.actor, entry.memo) == (dave, "fix")


def test_a_debit_never_takes_available_below_zero(allocation, tenant, cluster, dave):
    hold(tenant, cluster, "900", "job-h")

    with pytest.raises(InvalidAmount):
        ledger_adjust(actor=dave, allocation=allocation, amount=Decimal(-101), key="d", memo="x")

    assert counters(allocation) == (Decimal(1000), Decimal(900), 0)


def test_a_system_debit_takes_at_most_what_is_available_and_leaves_holds_alone(
    allocation, tenant, cluster
):
    h = hold(tenant, cluster, "300", "job-s")
    ledger_settle(actor=None, hold=h, actual=Decimal(100))  # 100 charged, 900 available

    entry = ledger_debit(
        actor=None, allocation=allocation, amount=Decimal(950), key="refund-1", memo="refund"
    )

    assert entry is not None
    assert (entry.kind, entry.amount, entry.actor) == (
        LedgerEntry.Kind.EXPIRE,
        Decimal(900),
        None,
    )
    assert (allocation.credited, allocation.available) == (Decimal(100), 0)
    assert counters(allocation) == (Decimal(100), 0, Decimal(100))
    assert counters(allocation) == ledger_sums(allocation)
    assert_reconciles()


def test_a_system_debit_with_the_same_key_debits_once(allocation):
    first = ledger_debit(actor=None, allocation=allocation, amount=Decimal(40), key="k", memo="x")
    again = ledger_debit(actor=None, allocation=allocation, amount=Decimal(40), key="k", memo="x")

    assert first is not None and again is not None
    assert first.pk == again.pk
    assert counters(allocation) == (Decimal(960), 0, 0)


def test_a_system_debit_of_nothing_available_writes_nothing(allocation, tenant, cluster):
    hold(tenant, cluster, "1000", "job-t")

    entry = ledger_debit(actor=None, allocation=allocation, amount=Decimal(5), key="e", memo="x")

    assert entry is None
    assert counters(allocation) == (Decimal(1000), Decimal(1000), 0)
    assert not LedgerEntry.objects.filter(idempotency_key="e").exists()


@pytest.mark.parametrize("amount", ["-5", "abc", "NaN"])
def test_a_system_debit_refuses_amounts_that_are_not_non_negative_numbers(allocation, amount):
    with pytest.raises(InvalidAmount):
        ledger_debit(actor=None, allocation=allocation, amount=amount, key="n", memo="x")

    assert counters(allocation) == (Decimal(1000), 0, 0)


def test_an_allocation_is_exhausted_when_nothing_is_left_and_reactivates_on_credit(
    allocation, tenant, cluster
):
    h = hold(tenant, cluster, "1000", "job-i")
    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.ACTIVE  # SU are held, not gone yet

    ledger_settle(actor=None, hold=h, actual=Decimal(1000))
    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.EXHAUSTED

    ledger_credit(actor=None, allocation=allocation, amount=Decimal(50), key="top-up")
    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.ACTIVE
    assert hold(tenant, cluster, "50", "job-j").allocation_id == allocation.pk


def test_a_suspended_allocation_refuses_holds_with_its_reason(allocation, tenant, cluster, dave):
    allocation_suspend(actor=dave, allocation=allocation, reason="Invoice 42 is unpaid")

    with pytest.raises(AllocationSuspended) as err:
        hold(tenant, cluster, "10", "job-k")

    assert err.value.status == HTTPStatus.PAYMENT_REQUIRED
    assert err.value.code == "allocation_suspended"
    assert "Invoice 42 is unpaid" in err.value.detail
    assert err.value.as_dict()["reason"] == "Invoice 42 is unpaid"
    assert counters(allocation) == (Decimal(1000), 0, 0)

    allocation_resume(actor=dave, allocation=allocation)
    assert hold(tenant, cluster, "10", "job-k").allocation_id == allocation.pk


def test_a_suspended_allocation_is_skipped_when_an_active_one_covers_the_hold(
    allocation, tenant, cluster
):
    other = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(actor=None, allocation=other, amount=Decimal(100), key="other")
    allocation_suspend(actor=None, allocation=allocation, reason="audit")

    assert hold(tenant, cluster, "60", "job-l").allocation_id == other.pk
    with pytest.raises(AllocationSuspended):
        hold(tenant, cluster, "60", "job-m")  # only the suspended one could cover it


def test_insufficient_quota_names_the_shortfall_when_nothing_is_suspended(
    allocation, tenant, cluster
):
    with pytest.raises(InsufficientQuota) as err:
        hold(tenant, cluster, "1000.5", "job-n")
    assert err.value.shortfall == Decimal("0.5")


def test_people_who_are_not_facility_admins_cannot_suspend(allocation, alice):
    with pytest.raises(PermissionDenied):
        allocation_suspend(actor=alice, allocation=allocation, reason="x")
    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.ACTIVE


def test_resuming_an_active_allocation_is_a_conflict(allocation, dave):
    with pytest.raises(AllocationStateError):
        allocation_resume(actor=dave, allocation=allocation)


def test_usage_thresholds_email_the_pi_once_each_after_commit(
    allocation, tenant, cluster, alice, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        h1 = hold(tenant, cluster, "850", "job-o")
        ledger_settle(actor=None, hold=h1, actual=Decimal("810"))
    assert len(callbacks) == 1
    assert [m.to for m in mail.outbox] == [[alice.email]]
    assert "80 %" in mail.outbox[0].subject

    with django_capture_on_commit_callbacks(execute=True):
        h2 = hold(tenant, cluster, "100", "job-p")
        ledger_settle(actor=None, hold=h2, actual=Decimal("50"))
    assert len(mail.outbox) == 1  # 86 %: the 80 % mail went already

    with django_capture_on_commit_callbacks(execute=True):
        h3 = hold(tenant, cluster, "140", "job-q")
        ledger_settle(actor=None, hold=h3, actual=Decimal("140"))  # 1000 of 1000
    assert len(mail.outbox) == 2
    assert "100 %" in mail.outbox[1].subject
    allocation.refresh_from_db()
    assert allocation.notified == ["80", "100"]


def test_no_threshold_mail_is_sent_when_the_transaction_rolls_back(
    allocation, tenant, cluster, django_capture_on_commit_callbacks
):
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                h = hold(tenant, cluster, "900", "job-s")
                ledger_settle(actor=None, hold=h, actual=Decimal("900"))
                raise RuntimeError("the caller failed after settling")
        except RuntimeError:
            pass
    assert callbacks == []
    assert mail.outbox == []
    assert counters(allocation) == (Decimal(1000), 0, 0)
