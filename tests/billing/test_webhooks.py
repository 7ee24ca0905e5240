from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.utils import timezone

from quotas.billing.models import BillingAccount, Invoice, Purchase, StripeEvent
from quotas.billing.stripe_api import stripe_client
from quotas.models import Allocation, LedgerEntry
from quotas.reconcile import reconcile_ledger
from tests.billing.conftest import WEBHOOK_SECRET, WEBHOOK_URL
from tests.billing.helpers import checkout, open_postpaid
from tests.stripe_server import sign_payload


@pytest.fixture
def completed_event(api_alice, tenant, cluster, pack, stripe_on):
    purchase = checkout(api_alice, tenant.project)
    return stripe_on.event(
        "checkout.session.completed", stripe_on.complete_checkout(purchase.stripe_session_id)
    )


def _nothing_stored() -> bool:
    return (
        not StripeEvent.objects.exists()
        and not Allocation.objects.filter(kind=Allocation.Kind.PURCHASE).exists()
    )


def test_a_webhook_signed_with_another_secret_is_refused_and_nothing_is_stored(
    completed_event, send_webhook
):
    response = send_webhook(completed_event, secret="whsec_forged")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["code"] == "invalid_webhook"
    assert _nothing_stored()


def test_a_webhook_older_than_the_tolerance_is_refused_and_nothing_is_stored(
    completed_event, send_webhook, settings
):
    stale = int(time.time()) - settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS - 5

    response = send_webhook(completed_event, timestamp=stale)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert _nothing_stored()


def test_a_webhook_just_inside_the_tolerance_is_accepted(completed_event, send_webhook, settings):
    recent = int(time.time()) - settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS + 30

    response = send_webhook(completed_event, timestamp=recent)

    assert response.status_code == HTTPStatus.OK
    assert StripeEvent.objects.count() == 1


@pytest.mark.parametrize("header", [None, "", "t=123", "v1=abc", "garbage"])
def test_an_unsigned_or_malformed_signature_is_refused_and_nothing_is_stored(
    completed_event, send_webhook, header
):
    response = send_webhook(completed_event, signature=header)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert _nothing_stored()


def test_a_tampered_body_with_a_valid_signature_of_the_original_is_refused(
    completed_event, client, stripe_on
):
    original = json.dumps(completed_event)
    tampered = original.replace('"payment_status": "paid"', '"payment_status": "paid" ')

    response = client.post(
        WEBHOOK_URL,
        data=tampered,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(original, WEBHOOK_SECRET),
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert _nothing_stored()


def test_the_webhook_accepts_only_post(client, stripe_on):
    assert client.get(WEBHOOK_URL).status_code == HTTPStatus.METHOD_NOT_ALLOWED


def test_a_signed_body_that_is_not_an_event_is_refused(db, send_webhook, stripe_on):
    response = send_webhook({"hello": "world"})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not StripeEvent.objects.exists()


def test_unknown_event_types_are_stored_and_acknowledged(db, send_webhook, stripe_on):
    event = stripe_on.event("customer.tax_id.created", {"id": "txi_1", "object": "tax_id"})

    response = send_webhook(event)

    assert response.status_code == HTTPStatus.OK
    stored = StripeEvent.objects.get()
    assert (stored.stripe_id, stored.type, stored.status) == (
        event["id"],
        "customer.tax_id.created",
        StripeEvent.Status.IGNORED,
    )
    assert stored.payload == event


def test_without_a_webhook_secret_every_webhook_is_refused(completed_event, send_webhook, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""

    response = send_webhook(completed_event)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert _nothing_stored()


# --- replay and order independence ----------------------------------------------------


def _world(api_alice, tenant, stripe_on):
    """Everything Stripe will tell us about one organization, as a list of events:
    a card purchase refunded in part, a delayed-payment purchase, and a post-paid invoice
    whose payment failed long ago (past the grace period) and was finally paid."""
    plan = open_postpaid(tenant.org, tenant.project, limit="1000")
    customer = BillingAccount.objects.get(organization=tenant.org).stripe_customer_id
    card = checkout(api_alice, tenant.project, quantity=2)
    card_session = stripe_on.complete_checkout(card.stripe_session_id)
    stripe_client().v1.refunds.create(
        params={"payment_intent": card_session["payment_intent"], "amount": 4950}
    )
    charge = stripe_on.charge_for(card_session["payment_intent"])
    delayed = checkout(api_alice, tenant.project)
    delayed_completed = stripe_on.complete_checkout(
        delayed.stripe_session_id, payment_status="unpaid"
    )
    delayed_succeeded = stripe_on.settle_async_payment(delayed.stripe_session_id)
    now = int(time.time())
    failed_at = now - 10 * 86400
    invoice = stripe_on.create_invoice(customer, amount_due=12345, created=failed_at - 3600)
    created = stripe_on.event("invoice.created", invoice, created=failed_at - 3600)
    finalized = stripe_on.update_invoice(invoice["id"], status="open", at=failed_at - 1800)
    failed = stripe_on.update_invoice(invoice["id"], attempt_count=1)
    paid = stripe_on.update_invoice(invoice["id"], status="paid", attempt_count=2, at=now)
    events = [
        stripe_on.event("checkout.session.completed", card_session),
        stripe_on.event("charge.refunded", charge),
        stripe_on.event("checkout.session.completed", delayed_completed),
        stripe_on.event("checkout.session.async_payment_succeeded", delayed_succeeded),
        created,
        stripe_on.event("invoice.finalized", finalized, created=failed_at - 1800),
        stripe_on.event("invoice.updated", finalized, created=failed_at - 1700),
        stripe_on.event("invoice.payment_failed", failed, created=failed_at),
        stripe_on.event("invoice.paid", paid, created=now),
        stripe_on.event("invoice.payment_succeeded", paid, created=now),
        stripe_on.event("billing_portal.session.created", {"id": "bps_1"}),
    ]
    return plan, card, delayed, invoice, events


def _state(tenant, plan, card, delayed, invoice):
    card.refresh_from_db()
    delayed.refresh_from_db()
    plan.allocation.refresh_from_db()
    row = Invoice.objects.get(stripe_id=invoice["id"])
    account = BillingAccount.objects.get(organization=tenant.org)
    return {
        "card": (card.status, card.amount_refunded, card.su_reversed, card.allocation.available),
        "delayed": (delayed.status, delayed.allocation.credited),
        "purchase_allocations": Allocation.objects.filter(kind=Allocation.Kind.PURCHASE).count(),
        "ledger_entries": LedgerEntry.objects.count(),
        "invoice": (
            row.status,
            row.number,
            row.amount_due,
            row.amount_paid,
            row.attempt_count,
            row.paid_at is not None,
            row.first_payment_failed_at is not None,
        ),
        "postpaid": (plan.allocation.status, account.suspended_at, account.suspended_allocations),
        "events": sorted(StripeEvent.objects.values_list("status", flat=True)),
        "ledger_reconciles": reconcile_ledger().ok,
    }


EXPECTED = {
    "card": (Purchase.Status.PAID, 4950, Decimal("250"), Decimal("750")),
    "delayed": (Purchase.Status.PAID, Decimal("500")),
    "purchase_allocations": 2,
    # plan credit 1, two purchase credits, one refund debit
    "ledger_entries": 4,
    "invoice": ("paid", "GPUC-0001", 12345, 12345, 2, True, True),
    "postpaid": ("active", None, []),
    "events": ["ignored"] + ["processed"] * 10,
    "ledger_reconciles": True,
}


def test_all_events_in_stripe_order_give_the_expected_state(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    plan, card, delayed, invoice, events = _world(api_alice, tenant, stripe_on)

    for event in events:
        assert send_webhook(event).status_code == HTTPStatus.OK

    assert _state(tenant, plan, card, delayed, invoice) == EXPECTED


@pytest.mark.parametrize("seed", [1, 2, 3, 5, 8, 13, 21, 34])
def test_every_event_ten_times_in_a_random_order_changes_nothing_after_the_first(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook, seed
):
    plan, card, delayed, invoice, events = _world(api_alice, tenant, stripe_on)
    deliveries = events * 10
    random.Random(seed).shuffle(deliveries)

    for event in deliveries:
        assert send_webhook(event).status_code == HTTPStatus.OK

    assert _state(tenant, plan, card, delayed, invoice) == EXPECTED


def test_a_late_payment_failure_never_reopens_a_paid_invoice(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    plan, _card, _delayed, invoice, events = _world(api_alice, tenant, stripe_on)
    by_type = {e["type"]: e for e in events}

    send_webhook(by_type["invoice.paid"])
    send_webhook(by_type["invoice.payment_failed"])
    send_webhook(by_type["invoice.finalized"])

    row = Invoice.objects.get(stripe_id=invoice["id"])
    assert (row.status, row.amount_paid) == ("paid", 12345)
    plan.allocation.refresh_from_db()
    assert plan.allocation.status == Allocation.Status.ACTIVE


def test_a_duplicate_of_an_event_still_waiting_is_queued_again(
    completed_event, send_webhook, stripe_on, monkeypatch
):
    with monkeypatch.context() as patch:  # the broker loses the first task
        patch.setattr("quotas.billing.tasks.process_stripe_event_task.delay", lambda *a: None)
        send_webhook(completed_event)
    assert StripeEvent.objects.get().status == StripeEvent.Status.RECEIVED

    send_webhook(completed_event)

    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED
    assert Allocation.objects.get(kind=Allocation.Kind.PURCHASE).credited == Decimal("500")


def test_the_sweep_processes_events_no_worker_finished(completed_event, send_webhook, monkeypatch):
    from quotas.billing.tasks import stripe_events_sweep_task

    with monkeypatch.context() as patch:
        patch.setattr("quotas.billing.tasks.process_stripe_event_task.delay", lambda *a: None)
        send_webhook(completed_event)
    StripeEvent.objects.update(received_at=timezone.now() - timedelta(hours=1))

    assert stripe_events_sweep_task() == 1

    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED
