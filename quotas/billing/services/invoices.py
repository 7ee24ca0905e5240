"""Invoices mirrored from Stripe, and what an unpaid one does to post-paid spending."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Organization
from quotas.billing.exceptions import StripeUnavailable
from quotas.billing.models import BillingAccount, Invoice
from quotas.billing.services.accounts import payment_enforce
from quotas.billing.stripe_api import stripe_client

logger = logging.getLogger(__name__)


def from_timestamp(value: Any) -> datetime | None:
    """A Stripe Unix timestamp as an aware datetime (None stays None)."""
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


def _invoice_locked(stripe_id: str, organization: Organization, created: datetime) -> Invoice:
    try:
        with transaction.atomic():
            Invoice.objects.get_or_create(
                stripe_id=stripe_id,
                defaults={
                    "organization": organization,
                    "stripe_created": created,
                    "snapshot_at": datetime.min.replace(tzinfo=UTC),
                },
            )
    except IntegrityError:
        pass  # created concurrently: lock the winner's row below
    return Invoice.objects.select_for_update().get(stripe_id=stripe_id)


@transaction.atomic
def invoice_apply(
    *, invoice: dict[str, Any], event_type: str = "", observed_at: datetime
) -> Invoice | None:
    """Bring our copy of an invoice up to date with a snapshot observed at `observed_at`.

    A snapshot replaces the stored one only if its (status rank, time) is not older: Stripe
    moves invoices forward only, so a late `invoice.payment_failed` never reopens a paid
    invoice. A `payment_failed` event dates the first failure (the earliest one wins). Then
    the organization's post-paid suspension is recomputed. None for a foreign customer.
    """
    customer = invoice.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    account = (
        BillingAccount.objects.filter(stripe_customer_id=customer).select_related("organization")
        if customer
        else BillingAccount.objects.none()
    ).first()
    if account is None or not invoice.get("id"):
        return None
    created = from_timestamp(invoice.get("created")) or observed_at
    row = _invoice_locked(invoice["id"], account.organization, created)
    status = invoice.get("status") or Invoice.Status.DRAFT
    rank = Invoice.RANK.get(status, 0)
    if (rank, observed_at) >= (row.snapshot_rank, row.snapshot_at):
        transitions = invoice.get("status_transitions") or {}
        row.number = invoice.get("number") or row.number
        row.status = status
        row.currency = (invoice.get("currency") or row.currency)[:3]
        row.amount_due = int(invoice.get("amount_due") or 0)
        row.amount_paid = int(invoice.get("amount_paid") or 0)
        row.amount_remaining = int(invoice.get("amount_remaining") or 0)
        row.period_start = from_timestamp(invoice.get("period_start"))
        row.period_end = from_timestamp(invoice.get("period_end"))
        row.hosted_invoice_url = invoice.get("hosted_invoice_url") or row.hosted_invoice_url
        row.invoice_pdf = invoice.get("invoice_pdf") or row.invoice_pdf
        row.attempt_count = int(invoice.get("attempt_count") or 0)
        row.stripe_created = created
        row.paid_at = from_timestamp(transitions.get("paid_at")) or row.paid_at
        row.snapshot_rank = rank
        row.snapshot_at = observed_at
    if event_type == "invoice.payment_failed" and (
        row.first_payment_failed_at is None or observed_at < row.first_payment_failed_at
    ):
        row.first_payment_failed_at = observed_at
    row.save()
    payment_enforce(organization=account.organization)
    return row


def invoices_sync(*, organization: Organization) -> list[Invoice]:
    """Re-read every invoice of the organization's customer from Stripe (after an outage of
    webhooks, for example); the snapshots count as observed now."""
    account = BillingAccount.objects.filter(organization=organization).first()
    if account is None or not account.stripe_customer_id:
        return []
    client = stripe_client()
    observed_at = timezone.now()
    rows: list[Invoice] = []
    try:
        page = client.v1.invoices.list(
            params={"customer": account.stripe_customer_id, "limit": 100}
        )
        for item in page.auto_paging_iter():
            row = invoice_apply(invoice=item.to_dict(), observed_at=observed_at)
            if row is not None:
                rows.append(row)
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe did not list the invoices: {exc}") from exc
    return rows
