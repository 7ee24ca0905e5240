"""Property: whatever sequence of credits, holds, settles, refunds, adjustments and expiries
runs, the ledger agrees with an independent model of it and with its own invariants."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotas.exceptions import AllocationStateError, InsufficientQuota, InvalidAmount
from quotas.models import Allocation, Hold
from quotas.reconcile import reconcile_ledger
from quotas.services import (
    allocations_expire,
    ledger_adjust,
    ledger_credit,
    ledger_hold,
    ledger_refund,
    ledger_settle,
)
from tests import factories
from tests.quotas.conftest import ledger_sums

amounts = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(80), places=4)
which = st.sampled_from(["early", "late"])
fractions = st.sampled_from([Decimal(0), Decimal("0.25"), Decimal("0.5"), Decimal(1), Decimal(2)])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), which, amounts),
        st.tuples(st.just("hold"), amounts),
        st.tuples(st.just("hold"), amounts),
        st.tuples(st.just("settle"), st.integers(0, 20), fractions),
        st.tuples(st.just("refund"), which, amounts),
        st.tuples(st.just("adjust"), which, amounts, st.booleans()),
        st.tuples(st.just("expire")),
    ),
    max_size=25,
)


@dataclass
class Book:
    """What the counters of one allocation must be, computed without the ledger."""

    credited: Decimal
    held: Decimal = Decimal(0)
    charged: Decimal = Decimal(0)
    expired: bool = False

    @property
    def available(self) -> Decimal:
        return self.credited - self.held - self.charged


@dataclass
class World:
    allocations: dict[str, Allocation]
    books: dict[str, Book]
    open_holds: list[tuple[Hold, str]] = field(default_factory=list)
    n: int = 0

    def key(self) -> str:
        self.n += 1
        return f"op-{self.n}"


def apply(world: World, op: tuple, *, project, cluster, admin) -> None:
    kind = op[0]
    if kind == "credit":
        name, amount = op[1], op[2]
        book = world.books[name]
        if book.expired:
            with pytest.raises(AllocationStateError):
                ledger_credit(
                    actor=None, allocation=world.allocations[name], amount=amount, key=world.key()
                )
        else:
            ledger_credit(
                actor=None, allocation=world.allocations[name], amount=amount, key=world.key()
            )
            book.credited += amount
    elif kind == "hold":
        amount = op[1]
        # Policy: the earliest-ending live allocation that covers the whole amount.
        target = next(
            (
                name
                for name in ("early", "late")
                if not world.books[name].expired and world.books[name].available >= amount
            ),
            None,
        )
        if target is None:
            with pytest.raises(InsufficientQuota):
                ledger_hold(
                    actor=None, project=project, cluster=cluster, amount=amount, key=world.key()
                )
        else:
            hold = ledger_hold(
                actor=None, project=project, cluster=cluster, amount=amount, key=world.key()
            )
            assert hold.allocation_id == world.allocations[target].pk
            world.books[target].held += amount
            world.open_holds.append((hold, target))
    elif kind == "settle":
        if not world.open_holds:
            return
        hold, name = world.open_holds.pop(op[1] % len(world.open_holds))
        actual = (hold.amount * op[2]).quantize(Decimal("0.0001"))
        ledger_settle(actor=None, hold=hold, actual=actual)
        ledger_settle(actor=None, hold=hold, actual=actual)  # a retry changes nothing
        book = world.books[name]
        charge = min(actual, hold.amount)
        book.held -= hold.amount
        book.charged += charge
        if book.expired:  # what comes back after expiry expires too
            book.credited -= hold.amount - charge
    elif kind == "refund":
        name, amount = op[1], op[2]
        book = world.books[name]
        allocation = world.allocations[name]
        if amount > book.charged:
            with pytest.raises(InvalidAmount):
                ledger_refund(
                    actor=None, allocation=allocation, amount=amount, key=world.key(), memo="r"
                )
        else:
            ledger_refund(
                actor=None, allocation=allocation, amount=amount, key=world.key(), memo="r"
            )
            book.charged -= amount
            if book.expired:
                book.credited -= amount
    elif kind == "adjust":
        name, amount, debit = op[1], op[2], op[3]
        value = -amount if debit else amount
        book = world.books[name]
        allocation = world.allocations[name]
        error = (
            AllocationStateError
            if book.expired
            else InvalidAmount
            if debit and amount > book.available
            else None
        )
        if error is not None:
            with pytest.raises(error):
                ledger_adjust(
                    actor=admin, allocation=allocation, amount=value, key=world.key(), memo="m"
                )
        else:
            ledger_adjust(
                actor=admin, allocation=allocation, amount=value, key=world.key(), memo="m"
            )
            book.credited += value
    elif kind == "expire":
        early = world.allocations["early"]
        past = timezone.now() - timedelta(seconds=1)
        Allocation.objects.filter(pk=early.pk).update(
            starts_at=past - timedelta(days=1), ends_at=past
        )
        allocations_expire(now=timezone.now())
        book = world.books["early"]
        if not book.expired:
            book.credited -= book.available  # only what is available expires; held stays held
            book.expired = True


def check(world: World) -> None:
    for name, allocation in world.allocations.items():
        allocation.refresh_from_db()
        book = world.books[name]
        counters = (allocation.credited, allocation.held, allocation.charged)
        assert counters == (book.credited, book.held, book.charged), name
        assert counters == ledger_sums(allocation), name
        assert allocation.available >= 0
        open_amounts = Hold.objects.filter(allocation=allocation, state=Hold.State.OPEN)
        assert allocation.held == sum((h.amount for h in open_amounts), Decimal(0))
        assert (allocation.status == Allocation.Status.EXPIRED) == book.expired
        if book.expired:
            assert allocation.available == 0
    report = reconcile_ledger(stale_hold_days=10_000)
    assert report.ok, report.format()


@settings(
    max_examples=int(__import__("os").environ.get("QUOTAS_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_any_sequence_of_ledger_operations_keeps_every_invariant(ops, tenant, cluster, dave):
    with transaction.atomic():
        early = factories.AllocationFactory(
            project=tenant.project, clusters=[cluster], ends_at=timezone.now() + timedelta(days=10)
        )
        late = factories.AllocationFactory(
            project=tenant.project, clusters=[cluster], ends_at=timezone.now() + timedelta(days=99)
        )
        ledger_credit(actor=None, allocation=early, amount=Decimal(100), key="seed-early")
        ledger_credit(actor=None, allocation=late, amount=Decimal(50), key="seed-late")
        world = World(
            allocations={"early": early, "late": late},
            books={"early": Book(Decimal(100)), "late": Book(Decimal(50))},
        )
        check(world)
        for op in ops:
            apply(world, op, project=tenant.project, cluster=cluster, admin=dave)
            check(world)
        # Whatever is still open settles cleanly at the end.
        while world.open_holds:
            apply(
                world,
                ("settle", 0, Decimal("0.5")),
                project=tenant.project,
                cluster=cluster,
                admin=dave,
            )
            check(world)
        transaction.set_rollback(True)
