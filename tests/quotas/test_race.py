"""Concurrent holds racing one allocation on PostgreSQL: the row lock is the only thing that
stands between the threads and an overspend."""

from __future__ import annotations

import os
import threading
import time
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, connections, transaction

from quotas.exceptions import InsufficientQuota
from quotas.models import Hold, LedgerEntry
from quotas.services import ledger_credit, ledger_hold
from tests import factories
from tests.quotas.conftest import assert_reconciles, counters, ledger_sums

ATTEMPTS = 200
FITS = 37
HOLD = Decimal("7.3125")
REMAINDER = Decimal("3.0001")  # less than one more hold
# PostgreSQL's max_connections (100 by default) is shared with other test runs: the threads
# take turns holding one of this many connections at a time, all contending for one row.
MAX_CONNECTIONS = int(os.environ.get("QUOTAS_RACE_MAX_CONNECTIONS", "40"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_200_concurrent_holds_on_an_allocation_sized_for_37_place_exactly_37(tenant, cluster):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (set DATABASE_URL to a PostgreSQL database)")
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(actor=None, allocation=allocation, amount=HOLD * FITS + REMAINDER, key="race")
    gate = threading.Semaphore(MAX_CONNECTIONS)
    start = threading.Barrier(ATTEMPTS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        start.wait()
        with gate:
            try:
                for tries in range(50):
                    try:
                        ledger_hold(
                            actor=None,
                            project=tenant.project,
                            cluster=cluster,
                            amount=HOLD,
                            key=f"race-{i}",
                        )
                        outcome = "held"
                    except InsufficientQuota:
                        outcome = "refused"
                    except OperationalError as exc:  # another run holds every connection
                        if "too many clients" not in str(exc) or tries == 49:
                            outcome = f"error: {exc}"
                        else:
                            connections.close_all()
                            time.sleep(0.05)
                            continue
                    except Exception as exc:
                        outcome = f"error: {exc!r}"
                    break
                with lock:
                    outcomes.append(outcome)
            finally:
                connections.close_all()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(ATTEMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not any(t.is_alive() for t in threads)
    assert sorted(set(outcomes)) == ["held", "refused"], [o for o in outcomes if "error" in o]
    assert outcomes.count("held") == FITS
    assert outcomes.count("refused") == ATTEMPTS - FITS
    credited, held, charged = counters(allocation)
    assert (held, charged) == (HOLD * FITS, 0)
    assert allocation.available == REMAINDER
    assert (credited, held, charged) == ledger_sums(allocation)
    assert Hold.objects.filter(allocation=allocation).count() == FITS
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD).count() == FITS
    assert_reconciles()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_racing_holds_with_one_key_place_one_hold_and_move_the_balance_once(tenant, cluster):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (set DATABASE_URL to a PostgreSQL database)")
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(actor=None, allocation=allocation, amount=HOLD * 4, key="race-key")
    first_held = threading.Event()
    holds: dict[str, Hold] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                holds["first"] = ledger_hold(
                    actor=None, project=tenant.project, cluster=cluster, amount=HOLD, key="once"
                )
                first_held.set()
                time.sleep(0.5)  # the second call starts its statement before this commits
        finally:
            connections.close_all()

    def second() -> None:
        first_held.wait(timeout=30)
        try:
            with transaction.atomic():
                holds["second"] = ledger_hold(
                    actor=None, project=tenant.project, cluster=cluster, amount=HOLD, key="once"
                )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert holds["first"].pk == holds["second"].pk
    assert Hold.objects.filter(key="once").count() == 1
    assert LedgerEntry.objects.filter(idempotency_key="once:hold").count() == 1
    assert counters(allocation)[1] == HOLD
    assert_reconciles()
