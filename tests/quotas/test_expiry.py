from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from quotas.exceptions import AllocationStateError, InsufficientQuota, InvalidRequest
from quotas.models import Allocation, LedgerEntry
from quotas.services import (
    allocation_extend,
    allocations_expire,
    ledger_credit,
    ledger_hold,
    ledger_refund,
    ledger_settle,
)
from quotas.tasks import allocations_expire_task
from tests import factories
from tests.quotas.conftest import assert_reconciles, counters, ledger_sums


def end_now(allocation: Allocation) -> None:
    past = timezone.now() - timedelta(minutes=1)
    Allocation.objects.filter(pk=allocation.pk).update(
        starts_at=past - timedelta(days=30), ends_at=past
    )


def test_expiry_takes_only_what_is_available_and_never_strands_a_hold(allocation, tenant, cluster):
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(300), key="running"
    )
    end_now(allocation)

    result = allocations_expire()

    allocation.refresh_from_db()
    assert (result.expired, result.expired_su) == (1, Decimal(700))
    assert allocation.status == Allocation.Status.EXPIRED
    assert counters(allocation) == (Decimal(300), Decimal(300), 0)  # the hold is intact
    assert_reconciles()

    ledger_settle(actor=None, hold=hold, actual=Decimal(120))  # the job ends later

    assert counters(allocation) == (Decimal(120), 0, Decimal(120))
    assert allocation.available == 0
    expired = LedgerEntry.objects.filter(allocation=allocation, kind=LedgerEntry.Kind.EXPIRE)
    assert sorted(e.amount for e in expired) == [Decimal(180), Decimal(700)]
    assert counters(allocation) == ledger_sums(allocation)
    assert_reconciles()


def test_running_expiry_twice_expires_once(allocation):
    end_now(allocation)

    allocations_expire()
    second = allocations_expire()

    assert second.expired == 0
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EXPIRE).count() == 1


def test_an_expired_allocation_takes_no_holds_credits_or_spare_refunds(allocation, tenant, cluster):
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(10), key="j"
    )
    ledger_settle(actor=None, hold=hold, actual=Decimal(10))
    end_now(allocation)
    allocations_expire()

    with pytest.raises(InsufficientQuota):
        ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=1, key="late")
    with pytest.raises(AllocationStateError):
        ledger_credit(actor=None, allocation=allocation, amount=Decimal(5), key="late-credit")
    ledger_refund(actor=None, allocation=allocation, amount=Decimal(4), key="ref", memo="node")

    assert counters(allocation) == (Decimal(6), 0, Decimal(6))
    assert allocation.available == 0
    assert_reconciles()


def test_the_pi_is_reminded_30_and_7_days_ahead_once_each(
    allocation, alice, django_capture_on_commit_callbacks
):
    now = timezone.now()
    Allocation.objects.filter(pk=allocation.pk).update(ends_at=now + timedelta(days=40))

    with django_capture_on_commit_callbacks(execute=True):
        allocations_expire(now=now)
        allocations_expire(now=now + timedelta(days=11))  # 29 days left
        allocations_expire(now=now + timedelta(days=12))
        allocations_expire(now=now + timedelta(days=34))  # 6 days left
        allocations_expire(now=now + timedelta(days=35))

    assert [m.to for m in mail.outbox] == [[alice.email], [alice.email]]
    assert "expires in 29 days" in mail.outbox[0].subject
    assert "expires in 6 days" in mail.outbox[1].subject
    allocation.refresh_from_db()
    assert allocation.notified == ["expiry-30", "expiry-7"]


def test_an_allocation_found_a_week_before_its_end_gets_one_reminder(
    allocation, django_capture_on_commit_callbacks
):
    now = timezone.now()
    Allocation.objects.filter(pk=allocation.pk).update(ends_at=now + timedelta(days=5))

    with django_capture_on_commit_callbacks(execute=True):
        allocations_expire_task()
        allocations_expire_task()

    assert len(mail.outbox) == 1
    allocation.refresh_from_db()
    assert sorted(allocation.notified) == ["expiry-30", "expiry-7"]


def test_extending_an_expired_allocation_reactivates_it_and_rearms_reminders(allocation, dave):
    end_now(allocation)
    allocations_expire()
    Allocation.objects.filter(pk=allocation.pk).update(notified=["expiry-30", "expiry-7", "80"])

    allocation_extend(
        actor=dave, allocation=allocation, ends_at=timezone.now() + timedelta(days=90)
    )

    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.ACTIVE
    assert allocation.notified == ["80"]
    assert allocation.available == 0  # what expired stays expired
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(5), key="after-extend")
    assert counters(allocation) == (Decimal(5), 0, 0)
    history = allocation.history.order_by("-history_date").first()
    assert history.history_user == dave


def test_extend_refuses_an_earlier_end(allocation, dave):
    with pytest.raises(InvalidRequest) as err:
        allocation_extend(
            actor=dave, allocation=allocation, ends_at=allocation.ends_at - timedelta(days=1)
        )
    assert err.value.field == "ends_at"


def test_expiry_of_an_extended_allocation_can_happen_again(allocation, dave):
    end_now(allocation)
    allocations_expire()
    allocation_extend(actor=dave, allocation=allocation, ends_at=timezone.now() + timedelta(days=1))
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(7), key="again")
    end_now(allocation)

    assert allocations_expire().expired_su == Decimal(7)
    assert counters(allocation) == (0, 0, 0)
    assert_reconciles()


def test_a_suspended_allocation_still_expires(allocation, dave):
    from quotas.services import allocation_suspend

    allocation_suspend(actor=dave, allocation=allocation, reason="audit")
    end_now(allocation)

    allocations_expire()

    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.EXPIRED
    assert allocation.available == 0


def test_the_factory_allocation_is_not_touched_before_its_end(tenant, cluster):
    alloc = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(actor=None, allocation=alloc, amount=Decimal(3), key="keep")

    assert allocations_expire().expired == 0
    assert counters(alloc) == (Decimal(3), 0, 0)
