from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.utils import timezone

from quotas.billing.models import BillingAccount, Purchase, RefundShortfall, StripeEvent
from quotas.billing.stripe_api import stripe_client
from quotas.models import Allocation, LedgerEntry
from quotas.reconcile import reconcile_ledger
from tests.billing.helpers import CHECKOUT_URL, checkout, post_checkout, spend


def test_checkout_opens_a_stripe_session_for_the_organization_customer_and_answers_its_url(
    api_alice, tenant, cluster, pack, stripe_on
):
    response = api_alice.post(
        CHECKOUT_URL,
        {"pack": "starter", "quantity": 2, "project": str(tenant.project.uuid)},
        format="json",
    )

    assert response.status_code == HTTPStatus.CREATED
    purchase = Purchase.objects.get()
    assert (
        response.json()["url"] == f"https://checkout.stripe.com/c/pay/{purchase.stripe_session_id}"
    )
    assert (purchase.status, purchase.su_amount, purchase.amount_total) == (
        Purchase.Status.OPEN,
        Decimal("1000"),
        19800,
    )
    account = BillingAccount.objects.get(organization=tenant.org)
    [customer_call] = stripe_on.requests_to("POST", "/v1/customers")
    assert customer_call.params["metadata"]["organization"] == str(tenant.org.uuid)
    assert customer_call.params["email"] == "alice@uni.example"
    [session_call] = stripe_on.requests_to("POST", "/v1/checkout/sessions")
    assert session_call.params["mode"] == "payment"
    assert session_call.params["customer"] == account.stripe_customer_id
    assert session_call.params["client_reference_id"] == str(purchase.uuid)
    assert session_call.params["line_items"] == [{"price": "price_starter", "quantity": "2"}]
    assert session_call.params["metadata"] == {
        "purchase": str(purchase.uuid),
        "organization": str(tenant.org.uuid),
        "project": str(tenant.project.uuid),
        "pack": "starter",
        "quantity": "2",
    }
    assert session_call.headers["idempotency-key"] == f"gpuc-checkout-{purchase.uuid}"


def test_the_stripe_customer_is_created_once_per_organization(
    api_alice, tenant, cluster, pack, stripe_on
):
    checkout(api_alice, tenant.project)
    checkout(api_alice, tenant.project, pack=str(pack.pk))

    assert Purchase.objects.count() == 2
    assert len(stripe_on.requests_to("POST", "/v1/customers")) == 1
    assert len(stripe_on.customers) == 1


def test_a_billing_member_can_buy_for_any_project_of_the_organization(
    carol, tenant, cluster, pack, stripe_on
):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(carol)
    purchase = checkout(api, tenant.project)

    assert purchase.created_by == carol


def test_completed_checkout_credits_one_purchase_allocation_with_the_pack_su(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project, quantity=3)
    session = stripe_on.complete_checkout(purchase.stripe_session_id)

    response = send_webhook(stripe_on.event("checkout.session.completed", session))

    assert response.status_code == HTTPStatus.OK
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.PAID
    allocation = Allocation.objects.get(project=tenant.project, kind=Allocation.Kind.PURCHASE)
    assert purchase.allocation == allocation
    assert (allocation.credited, allocation.available) == (Decimal("1500"), Decimal("1500"))
    assert list(allocation.clusters.all()) == [cluster]
    assert allocation.ends_at - allocation.starts_at == timedelta(days=365)
    [credit] = LedgerEntry.objects.filter(allocation=allocation)
    assert credit.idempotency_key == f"stripe-checkout:{purchase.stripe_session_id}"
    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED


def test_the_same_completed_event_delivered_ten_times_credits_once(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    event = stripe_on.event(
        "checkout.session.completed", stripe_on.complete_checkout(purchase.stripe_session_id)
    )

    responses = [send_webhook(event) for _ in range(10)]

    assert {r.status_code for r in responses} == {HTTPStatus.OK}
    assert [r.json()["duplicate"] for r in responses] == [False] + [True] * 9
    allocation = Allocation.objects.get(kind=Allocation.Kind.PURCHASE)
    assert allocation.credited == Decimal("500")
    assert LedgerEntry.objects.filter(allocation=allocation).count() == 1
    assert StripeEvent.objects.get().attempts == 1


def test_an_unpaid_completion_waits_for_the_async_payment_before_crediting(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    completed = stripe_on.complete_checkout(purchase.stripe_session_id, payment_status="unpaid")

    send_webhook(stripe_on.event("checkout.session.completed", completed))

    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.AWAITING_PAYMENT
    assert not Allocation.objects.filter(kind=Allocation.Kind.PURCHASE).exists()
    # The delayed payment clears; Stripe says so.
    succeeded = stripe_on.settle_async_payment(purchase.stripe_session_id)
    send_webhook(stripe_on.event("checkout.session.async_payment_succeeded", succeeded))
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.PAID
    assert purchase.allocation.credited == Decimal("500")


def test_an_unpaid_completion_is_checked_again_with_stripe_before_waiting(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    completed = stripe_on.complete_checkout(purchase.stripe_session_id, payment_status="unpaid")
    stripe_on.settle_async_payment(purchase.stripe_session_id)  # paid by the time we look

    send_webhook(stripe_on.event("checkout.session.completed", completed))

    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.PAID
    assert stripe_on.requests_to("GET", f"/v1/checkout/sessions/{purchase.stripe_session_id}")


def test_a_failed_async_payment_credits_nothing(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    completed = stripe_on.complete_checkout(purchase.stripe_session_id, payment_status="unpaid")
    send_webhook(stripe_on.event("checkout.session.completed", completed))

    send_webhook(stripe_on.event("checkout.session.async_payment_failed", completed))

    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.FAILED
    assert purchase.allocation is None


def test_a_session_the_portal_lost_track_of_is_credited_from_its_metadata(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project, quantity=2)
    session = stripe_on.complete_checkout(purchase.stripe_session_id)
    Purchase.objects.filter(pk=purchase.pk).delete()  # as if the row was never written

    send_webhook(stripe_on.event("checkout.session.completed", session))

    recovered = Purchase.objects.get(stripe_session_id=session["id"])
    assert recovered.uuid == purchase.uuid
    assert (recovered.status, recovered.project, recovered.su_amount) == (
        Purchase.Status.PAID,
        tenant.project,
        Decimal("1000"),
    )


def test_a_refund_takes_back_what_is_unspent_and_records_the_rest_as_owed(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    session = stripe_on.complete_checkout(purchase.stripe_session_id)
    send_webhook(stripe_on.event("checkout.session.completed", session))
    spend(tenant.project, cluster, "400", key="job-1")
    stripe_client().v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    charge = stripe_on.charge_for(session["payment_intent"])

    response = send_webhook(stripe_on.event("charge.refunded", charge))

    assert response.status_code == HTTPStatus.OK
    purchase.refresh_from_db()
    allocation = purchase.allocation
    allocation.refresh_from_db()
    assert (purchase.amount_refunded, purchase.su_reversed) == (9900, Decimal("100"))
    assert (allocation.credited, allocation.charged, allocation.available) == (
        Decimal("400"),
        Decimal("400"),
        Decimal("0"),
    )
    shortfall = RefundShortfall.objects.get(purchase=purchase)
    assert (shortfall.su_amount, shortfall.amount, shortfall.currency) == (
        Decimal("400"),
        7920,
        "eur",
    )
    [debit] = LedgerEntry.objects.filter(allocation=allocation, kind=LedgerEntry.Kind.EXPIRE)
    assert debit.amount == Decimal("100")
    assert reconcile_ledger().ok


def test_partial_refunds_debit_in_proportion_and_replays_change_nothing(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    session = stripe_on.complete_checkout(purchase.stripe_session_id)
    send_webhook(stripe_on.event("checkout.session.completed", session))
    client = stripe_client()
    client.v1.refunds.create(params={"payment_intent": session["payment_intent"], "amount": 1980})
    first = stripe_on.event("charge.refunded", stripe_on.charge_for(session["payment_intent"]))
    client.v1.refunds.create(params={"payment_intent": session["payment_intent"], "amount": 1980})
    second = stripe_on.event("charge.refunded", stripe_on.charge_for(session["payment_intent"]))

    for event in (second, first, second, first):
        send_webhook(event)

    purchase.refresh_from_db()
    purchase.allocation.refresh_from_db()
    assert (purchase.amount_refunded, purchase.su_reversed) == (3960, Decimal("200"))
    assert purchase.allocation.available == Decimal("300")
    assert not RefundShortfall.objects.exists()


def test_a_refund_that_arrives_before_its_checkout_waits_for_it(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    session = stripe_on.complete_checkout(purchase.stripe_session_id)
    stripe_client().v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    refund_event = stripe_on.event(
        "charge.refunded", stripe_on.charge_for(session["payment_intent"])
    )

    send_webhook(refund_event)
    assert StripeEvent.objects.get(stripe_id=refund_event["id"]).status == "deferred"
    send_webhook(stripe_on.event("checkout.session.completed", session))

    purchase.refresh_from_db()
    purchase.allocation.refresh_from_db()
    assert (purchase.status, purchase.su_reversed) == (Purchase.Status.PAID, Decimal("500"))
    assert purchase.allocation.available == Decimal("0")
    assert StripeEvent.objects.get(stripe_id=refund_event["id"]).status == "processed"


# --- bad input: 400 naming the field, and Stripe is never called ---------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pack": "9999", "quantity": 1}, "pack"),
        ({"pack": "no-such-pack", "quantity": 1}, "pack"),
        ({"pack": "starter", "quantity": -1}, "quantity"),
        ({"pack": "starter", "quantity": 0}, "quantity"),
        ({"pack": "starter", "quantity": 2.5}, "quantity"),
        ({"pack": "starter", "quantity": "many"}, "quantity"),
        ({"pack": "starter", "quantity": 101}, "quantity"),
        ({"pack": "starter", "quantity": 1, "project": "not-a-uuid"}, "project"),
        ({"pack": "starter", "quantity": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_checkout_input_is_refused_naming_the_field_without_calling_stripe(
    api_alice, tenant, cluster, pack, stripe_on, body, field
):
    body = {"project": str(tenant.project.uuid), **body}

    response = api_alice.post(CHECKOUT_URL, body, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == field
    assert field in response.json()["detail"]
    assert not Purchase.objects.exists()
    assert stripe_on.requests == []


def test_an_inactive_pack_is_unknown(api_alice, tenant, cluster, pack, stripe_on):
    pack.active = False
    pack.save()

    response = post_checkout(api_alice, tenant.project)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "pack"
    assert stripe_on.requests == []


def test_a_project_of_another_organization_is_refused_without_calling_stripe(
    api_mallory, mallory_tenant, tenant, cluster, pack, stripe_on
):
    response = post_checkout(api_mallory, tenant.project)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "project"
    assert "Evil Corp" in response.json()["detail"]
    assert not Purchase.objects.exists()
    assert stripe_on.requests == []


def test_checkout_for_an_organization_the_caller_does_not_bill_is_not_found(
    api_mallory, mallory_tenant, api_bob, tenant, cluster, pack, stripe_on
):
    body = {
        "pack": "starter",
        "quantity": 1,
        "project": str(tenant.project.uuid),
        "organization": str(tenant.org.uuid),
    }

    assert api_mallory.post(CHECKOUT_URL, body, format="json").status_code == HTTPStatus.NOT_FOUND
    assert api_bob.post(CHECKOUT_URL, body, format="json").status_code == HTTPStatus.NOT_FOUND
    assert stripe_on.requests == []


def test_a_stripe_error_answers_502_and_records_no_purchase(
    api_alice, tenant, cluster, pack, stripe_on
):
    pack.stripe_price_id = "price_deleted_in_stripe"
    pack.save()

    response = post_checkout(api_alice, tenant.project)

    assert response.status_code == HTTPStatus.BAD_GATEWAY
    assert response.json()["code"] == "stripe_unavailable"
    assert "No such price" in response.json()["detail"]
    assert not Purchase.objects.exists()


def test_without_stripe_keys_checkout_answers_billing_disabled(
    api_alice, tenant, cluster, pack, stripe_off, stripe_server
):
    response = post_checkout(api_alice, tenant.project)

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json()["code"] == "billing_disabled"
    assert stripe_server.requests == []


def test_purchased_su_expire_like_any_allocation_a_year_later(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    purchase = checkout(api_alice, tenant.project)
    send_webhook(
        stripe_on.event(
            "checkout.session.completed", stripe_on.complete_checkout(purchase.stripe_session_id)
        )
    )

    purchase.refresh_from_db()
    year = timezone.now() + timedelta(days=365)
    assert abs(purchase.allocation.ends_at - year) < timedelta(minutes=5)
