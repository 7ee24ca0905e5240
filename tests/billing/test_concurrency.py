"""Stripe delivers at least once and in parallel; our beat tasks may overlap. On PostgreSQL,
racing threads must still credit a checkout once and bill each charge once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from quotas.billing.models import BillingAccount, MeterReport, StripeEvent
from quotas.billing.services import meter_reports_build, meter_reports_send
from quotas.models import Allocation, LedgerEntry
from quotas.reconcile import reconcile_ledger
from tests.billing.conftest import WEBHOOK_SECRET, WEBHOOK_URL
from tests.billing.helpers import checkout, open_postpaid, spend
from tests.stripe_server import sign_payload

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (set DATABASE_URL to a PostgreSQL database)")


def _race(work: Callable[[int], object], count: int) -> list[object]:
    """Run work(i) in `count` threads released at once; their results (or exceptions)."""
    start = threading.Barrier(count)
    results: list[object] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            start.wait()
            outcome = work(i)
        except Exception as exc:
            outcome = exc
        finally:
            connections.close_all()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def test_parallel_deliveries_of_a_paid_checkout_credit_it_exactly_once(
    api_alice, tenant, cluster, pack, stripe_on
):
    purchase = checkout(api_alice, tenant.project)
    session = stripe_on.complete_checkout(purchase.stripe_session_id)
    events = [
        stripe_on.event("checkout.session.completed", session),
        stripe_on.event("checkout.session.async_payment_succeeded", session),
    ]
    payloads = [json.dumps(e) for e in events]

    def deliver(i: int) -> int:
        payload = payloads[i % 2]
        return (
            Client()
            .post(
                WEBHOOK_URL,
                data=payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=sign_payload(payload, WEBHOOK_SECRET),
            )
            .status_code
        )

    results = _race(deliver, 16)

    assert results == [HTTPStatus.OK] * 16
    allocation = Allocation.objects.get(kind=Allocation.Kind.PURCHASE)
    assert allocation.credited == Decimal("500")
    assert LedgerEntry.objects.filter(allocation=allocation).count() == 1
    assert sorted(StripeEvent.objects.values_list("status", flat=True)) == ["processed"] * 2
    assert reconcile_ledger().ok


def test_overlapping_report_tasks_bill_every_charge_once(tenant, cluster, stripe_on):
    open_postpaid(tenant.org, tenant.project, limit="1000")
    customer = BillingAccount.objects.get(organization=tenant.org).stripe_customer_id
    for n in range(25):
        spend(tenant.project, cluster, "1.0001", key=f"job-{n}")
    later = timezone.now() + timedelta(hours=1)

    def report(i: int) -> object:
        meter_reports_build(now=later)
        return meter_reports_send(now=later)

    results = _race(report, 6)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert MeterReport.objects.count() == 1
    assert MeterReport.objects.get().status == "sent"
    assert len(stripe_on.meter_events) == 1
    assert stripe_on.meter_total(customer) == 250025
