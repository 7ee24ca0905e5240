from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core import mail
from django.core.management import call_command

from quotas.billing.models import BillingAccount, Invoice, StripeEvent
from quotas.billing.tasks import billing_daily_task
from quotas.exceptions import AllocationSuspended
from quotas.models import Allocation
from quotas.services.ledger import ledger_hold
from tests.billing.helpers import spend

DAY = 86400


def _submit(tenant, cluster, key: str = "job-new"):
    """What a job submission does first: hold its estimate on an eligible allocation."""
    return ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal("5"), key=key
    )


def test_invoice_events_keep_our_copy_current(plan, customer, stripe_on, send_webhook):
    start, end = 1_754_006_400, 1_756_684_800
    invoice = stripe_on.create_invoice(
        customer, amount_due=4200, period_start=start, period_end=end
    )
    send_webhook(stripe_on.event("invoice.created", invoice))
    row = Invoice.objects.get()
    assert (row.status, row.amount_due, row.amount_paid) == ("draft", 4200, 0)

    send_webhook(
        stripe_on.event("invoice.finalized", stripe_on.update_invoice(invoice["id"], status="open"))
    )
    send_webhook(
        stripe_on.event("invoice.paid", stripe_on.update_invoice(invoice["id"], status="paid"))
    )

    row.refresh_from_db()
    assert (row.status, row.number, row.currency, row.amount_due, row.amount_paid) == (
        "paid",
        "GPUC-0001",
        "eur",
        4200,
        4200,
    )
    assert (row.period_start, row.period_end) == (
        datetime.fromtimestamp(start, tz=UTC),
        datetime.fromtimestamp(end, tz=UTC),
    )
    assert row.hosted_invoice_url == invoice["hosted_invoice_url"]
    assert row.paid_at is not None
    assert row.organization == plan.organization


def test_a_voided_invoice_stays_void(plan, customer, stripe_on, send_webhook):
    invoice = stripe_on.create_invoice(customer, amount_due=100)
    opened = stripe_on.update_invoice(invoice["id"], status="open")
    voided = stripe_on.update_invoice(invoice["id"], status="void")

    send_webhook(stripe_on.event("invoice.voided", voided))
    send_webhook(stripe_on.event("invoice.updated", opened))

    assert Invoice.objects.get().status == "void"


def test_payment_failure_past_grace_refuses_postpaid_submission_until_the_invoice_is_paid(
    plan, tenant, cluster, customer, stripe_on, send_webhook
):
    spend(tenant.project, cluster, "10", key="job-running")
    running = _submit(tenant, cluster, key="job-still-running")
    failed_at = int(time.time()) - 8 * DAY
    invoice = stripe_on.create_invoice(customer, amount_due=990, created=failed_at - DAY)
    failed = stripe_on.update_invoice(invoice["id"], status="open", attempt_count=1)

    response = send_webhook(stripe_on.event("invoice.payment_failed", failed, created=failed_at))

    assert response.status_code == HTTPStatus.OK
    plan.allocation.refresh_from_db()
    assert plan.allocation.status == Allocation.Status.SUSPENDED
    assert "GPUC-0001" in plan.allocation.status_reason
    with pytest.raises(AllocationSuspended) as refused:
        _submit(tenant, cluster)
    assert refused.value.status == HTTPStatus.PAYMENT_REQUIRED
    assert "suspended" in refused.value.detail
    assert "GPUC-0001 is unpaid" in refused.value.detail
    [email] = mail.outbox
    assert email.to == ["alice@uni.example"]
    assert "suspended" in email.subject
    assert "/billing/" in email.body
    running.refresh_from_db()
    assert running.state == "open"  # the running job keeps its hold

    paid = stripe_on.update_invoice(invoice["id"], status="paid", attempt_count=2)
    send_webhook(stripe_on.event("invoice.paid", paid))

    plan.allocation.refresh_from_db()
    assert plan.allocation.status == Allocation.Status.ACTIVE
    assert _submit(tenant, cluster).amount == Decimal("5")
    assert BillingAccount.objects.get(organization=tenant.org).suspended_at is None
    assert "active again" in mail.outbox[1].subject


def test_a_failure_within_grace_suspends_only_once_the_daily_check_finds_it_overdue(
    plan,
    tenant,
    cluster,
    customer,
    stripe_on,
    send_webhook,
    settings,
    django_capture_on_commit_callbacks,
):
    failed_at = int(time.time()) - 2 * DAY
    invoice = stripe_on.create_invoice(customer, amount_due=990, created=failed_at - DAY)
    failed = stripe_on.update_invoice(invoice["id"], status="open", attempt_count=1)
    send_webhook(stripe_on.event("invoice.payment_failed", failed, created=failed_at))
    plan.allocation.refresh_from_db()
    assert plan.allocation.status == Allocation.Status.ACTIVE
    assert _submit(tenant, cluster, key="job-1")

    settings.BILLING_PAYMENT_GRACE_DAYS = 1  # as if the grace period had run out
    with django_capture_on_commit_callbacks(execute=True):
        billing_daily_task.apply()

    plan.allocation.refresh_from_db()
    assert plan.allocation.status == Allocation.Status.SUSPENDED
    with pytest.raises(AllocationSuspended):
        _submit(tenant, cluster, key="job-2")
    assert len(mail.outbox) == 1


def test_the_earliest_failure_dates_the_grace_period_whatever_the_order(
    plan, customer, stripe_on, send_webhook
):
    now = int(time.time())
    invoice = stripe_on.create_invoice(customer, amount_due=990, created=now - 20 * DAY)
    failed = stripe_on.update_invoice(invoice["id"], status="open", attempt_count=2)

    send_webhook(stripe_on.event("invoice.payment_failed", failed, created=now - DAY))
    send_webhook(stripe_on.event("invoice.payment_failed", failed, created=now - 9 * DAY))

    row = Invoice.objects.get()
    assert row.first_payment_failed_at == datetime.fromtimestamp(now - 9 * DAY, tz=UTC)
    assert BillingAccount.objects.get(organization=plan.organization).is_suspended


def test_an_admin_suspension_is_not_lifted_by_a_payment(
    plan, tenant, cluster, customer, stripe_on, send_webhook
):
    from quotas.services.allocations import allocation_suspend

    invoice = stripe_on.create_invoice(customer, amount_due=5)
    paid = stripe_on.update_invoice(invoice["id"], status="paid")
    allocation_suspend(actor=None, allocation=plan.allocation, reason="Security review")

    send_webhook(stripe_on.event("invoice.paid", paid))

    plan.allocation.refresh_from_db()
    assert (plan.allocation.status, plan.allocation.status_reason) == (
        "suspended",
        "Security review",
    )


def test_an_overdue_invoice_without_a_postpaid_plan_suspends_nothing(
    api_alice, tenant, cluster, pack, stripe_on, send_webhook
):
    from tests.billing.helpers import checkout

    checkout(api_alice, tenant.project)  # the organization has a customer, no plan
    customer = BillingAccount.objects.get(organization=tenant.org).stripe_customer_id
    invoice = stripe_on.create_invoice(customer, amount_due=5, created=int(time.time()) - 30 * DAY)
    failed = stripe_on.update_invoice(invoice["id"], status="open", attempt_count=1)

    send_webhook(
        stripe_on.event("invoice.payment_failed", failed, created=int(time.time()) - 20 * DAY)
    )

    assert Invoice.objects.get().first_payment_failed_at is not None
    assert BillingAccount.objects.get(organization=tenant.org).suspended_at is None
    assert mail.outbox == []


def test_an_invoice_of_a_customer_we_do_not_know_is_ignored(plan, stripe_on, send_webhook):
    stranger = stripe_client_customer(stripe_on)
    invoice = stripe_on.create_invoice(stranger, amount_due=5)

    response = send_webhook(stripe_on.event("invoice.created", invoice))

    assert response.status_code == HTTPStatus.OK
    assert not Invoice.objects.exists()
    assert StripeEvent.objects.get().status == StripeEvent.Status.IGNORED


def stripe_client_customer(stripe_on) -> str:
    from quotas.billing.stripe_api import stripe_client

    return stripe_client().v1.customers.create(params={"name": "Someone else"}).id


def test_invoices_can_be_read_again_from_stripe(plan, tenant, customer, stripe_on, capsys):
    for amount in (100, 200, 300):
        invoice = stripe_on.create_invoice(customer, amount_due=amount)
        stripe_on.update_invoice(invoice["id"], status="paid")
    stripe_on.create_invoice(stripe_client_customer(stripe_on), amount_due=999)

    call_command("billing_sync_invoices", "--org", "vision-lab")

    assert sorted(Invoice.objects.values_list("amount_paid", flat=True)) == [100, 200, 300]
    assert set(Invoice.objects.values_list("status", flat=True)) == {"paid"}
    [listing] = stripe_on.requests_to("GET", "/v1/invoices")
    assert listing.params["customer"] == customer
    assert "vision-lab: 3 invoice(s)" in capsys.readouterr().out
