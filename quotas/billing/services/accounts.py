"""An organization's Stripe customer, and suspension of post-paid spending for non-payment."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import stripe
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from stripe.params import CustomerCreateParams

from accounts.models import Membership, Organization
from portal import mail
from quotas.billing.exceptions import StripeUnavailable
from quotas.billing.models import BillingAccount, Invoice
from quotas.billing.stripe_api import stripe_client
from quotas.models import Allocation
from quotas.services.allocations import allocation_resume, allocation_suspend

logger = logging.getLogger(__name__)

OVERDUE_STATUSES = (Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE)


def owner_emails(organization: Organization) -> list[str]:
    """The owners' addresses and the organization's billing address."""
    emails = set(
        Membership.objects.filter(
            organization=organization, role=Membership.Role.OWNER, user__is_active=True
        )
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    if organization.billing_email:
        emails.add(organization.billing_email)
    return sorted(emails)


def _account_locked(organization: Organization) -> BillingAccount:
    BillingAccount.objects.get_or_create(organization=organization)
    return BillingAccount.objects.select_for_update().get(organization=organization)


def billing_account_ensure_customer(*, organization: Organization) -> BillingAccount:
    """The organization's billing account with its Stripe customer, creating both lazily.

    The customer carries the organization's uuid in its metadata; the Stripe idempotency key
    is derived from the organization, so concurrent first purchases make one customer.
    Raises BillingDisabled without keys and StripeUnavailable when Stripe fails.
    """
    account = BillingAccount.objects.filter(organization=organization).first()
    if account is not None and account.stripe_customer_id:
        return account
    client = stripe_client()
    emails = owner_emails(organization)
    email = organization.billing_email or (emails[0] if emails else "")
    params: CustomerCreateParams = {
        "name": organization.name,
        "metadata": {
            "organization": str(organization.uuid),
            "organization_slug": organization.slug,
        },
    }
    if email:
        params["email"] = email
    try:
        customer = client.v1.customers.create(
            params=params,
            options={"idempotency_key": f"gpuc-customer-{organization.uuid}"},
        )
    except stripe.StripeError as exc:
        logger.warning("Stripe customer creation failed for %s: %s", organization.slug, exc)
        raise StripeUnavailable(f"Stripe did not create the customer: {exc}") from exc
    with transaction.atomic():
        locked = _account_locked(organization)
        if not locked.stripe_customer_id:
            locked.stripe_customer_id = customer.id
            locked.email = email
            locked.save(update_fields=["stripe_customer_id", "email", "updated_at"])
    return locked


def _send_on_commit(message: EmailMessage) -> None:
    if not message.to:
        return

    def send() -> None:
        try:
            get_connection().send_messages([message])
        except Exception:  # a mail outage must not undo the suspension that committed
            logger.exception("Could not send billing email to %s", message.to)

    transaction.on_commit(send)


def _notify(organization: Organization, *, template: str, subject: str, **context: object) -> None:
    url = mail.url_for("billing:page", organization.uuid)
    body = render_to_string(
        template,
        {"organization": organization, "billing_url": url, **mail.context(), **context},
    )
    _send_on_commit(
        EmailMessage(
            subject=mail.subject(subject),
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=owner_emails(organization),
        )
    )


@transaction.atomic
def payment_enforce(*, organization: Organization, now: datetime | None = None) -> BillingAccount:
    """Suspend the organization's post-paid allocations while an invoice stays unpaid past
    BILLING_PAYMENT_GRACE_DAYS from its first failed payment; resume them once none does.

    Computed from the invoices' current state, so it gives the same answer whatever order the
    webhooks arrived in. Owners are emailed on each change. Running jobs are not touched.
    """
    now = now or timezone.now()
    account = _account_locked(organization)
    cutoff = now - timedelta(days=settings.BILLING_PAYMENT_GRACE_DAYS)
    overdue = list(
        Invoice.objects.filter(
            organization=organization,
            status__in=OVERDUE_STATUSES,
            first_payment_failed_at__lte=cutoff,
        ).order_by("first_payment_failed_at")
    )
    if overdue and account.suspended_at is None:
        targets = list(
            Allocation.objects.filter(
                project__organization=organization,
                kind=Allocation.Kind.POSTPAID,
                status__in=(Allocation.Status.ACTIVE, Allocation.Status.EXHAUSTED),
            ).order_by("pk")
        )
        if not targets:
            return account  # nothing post-paid to stop (the daily check looks again)
        invoice = overdue[0]
        reason = (
            f"Post-paid usage is suspended: invoice {invoice.number or invoice.stripe_id} is "
            f"unpaid since {invoice.first_payment_failed_at:%Y-%m-%d}. Pay it on the billing page "
            "to resume."
        )
        for allocation in targets:
            allocation_suspend(actor=None, allocation=allocation, reason=reason)
        account.suspended_at = now
        account.suspended_allocations = [a.pk for a in targets]
        account.save(update_fields=["suspended_at", "suspended_allocations", "updated_at"])
        _notify(
            organization,
            template="billing/email/suspended.txt",
            subject=f"Post-paid usage of {organization.name} is suspended",
            invoices=overdue,
            grace_days=settings.BILLING_PAYMENT_GRACE_DAYS,
        )
    elif not overdue and account.suspended_at is not None:
        for allocation in Allocation.objects.filter(
            pk__in=account.suspended_allocations, status=Allocation.Status.SUSPENDED
        ).order_by("pk"):
            allocation_resume(actor=None, allocation=allocation)
        account.suspended_at = None
        account.suspended_allocations = []
        account.save(update_fields=["suspended_at", "suspended_allocations", "updated_at"])
        _notify(
            organization,
            template="billing/email/resumed.txt",
            subject=f"Post-paid usage of {organization.name} is active again",
        )
    return account
