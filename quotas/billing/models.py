"""Stripe customers, SU packs, checkout purchases, webhook events, meter reports, invoices.

Money is in the currency's minor unit (cents) as Stripe reports it; SU are Decimals like the
ledger. Every Stripe object we mirror keeps its Stripe id under a unique constraint, so a
replayed webhook or a retried task finds the row it already made.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Organization, Project
from quotas.models import ZERO, Allocation, Cluster, LedgerEntry

# Stripe meters accept whole numbers only: post-paid usage is reported in 1/10 000 SU (the
# ledger's precision), so every report is exact. Price the metered Stripe price accordingly
# (for example per 10 000 units, or with transform_quantity[divide_by]=10000).
METER_UNITS_PER_SU = Decimal(10_000)


class BillingAccount(models.Model):
    """An organization's billing state: its Stripe customer and any suspension for non-payment."""

    organization = models.OneToOneField(
        Organization, on_delete=models.PROTECT, related_name="billing_account"
    )
    stripe_customer_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    email = models.EmailField(blank=True)
    # Set while an invoice is unpaid past the grace period; the post-paid allocations that
    # billing suspended (and only those) are resumed when every overdue invoice is settled.
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspended_allocations = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Billing of {self.organization} ({self.stripe_customer_id or 'no customer yet'})"

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None


class SuPack(models.Model):
    """A prepaid bundle of service units sold through Stripe Checkout at a Stripe price."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    su_amount = models.DecimalField(
        max_digits=18, decimal_places=4, help_text="Service units per pack"
    )
    stripe_price_id = models.CharField(
        max_length=255, help_text="The Stripe price (price_…) charged per pack"
    )
    price_display = models.CharField(
        max_length=60, blank=True, help_text="Shown on the billing page, e.g. '€ 99'"
    )
    description = models.CharField(max_length=500, blank=True)
    clusters = models.ManyToManyField(
        Cluster,
        blank=True,
        related_name="+",
        help_text="Clusters the SU are valid on; none selected = every enabled cluster",
    )
    validity_days = models.PositiveIntegerField(default=365)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["su_amount", "name"]
        verbose_name = "SU pack"
        constraints = [
            models.CheckConstraint(condition=Q(su_amount__gt=0), name="supack_su_positive"),
            models.CheckConstraint(condition=Q(validity_days__gt=0), name="supack_validity"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.su_amount} SU)"


class Purchase(models.Model):
    """One Stripe Checkout of SU packs for a project; credited to a purchase allocation once."""

    class Status(models.TextChoices):
        OPEN = "open", "Waiting for checkout"
        AWAITING_PAYMENT = "awaiting_payment", "Waiting for payment"
        PAID = "paid", "Paid and credited"
        FAILED = "failed", "Payment failed"
        EXPIRED = "expired", "Checkout expired"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="su_purchases"
    )
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="su_purchases")
    pack = models.ForeignKey(SuPack, on_delete=models.PROTECT, related_name="purchases")
    quantity = models.PositiveIntegerField()
    su_amount = models.DecimalField(
        max_digits=18, decimal_places=4, help_text="SU bought (pack SU × quantity), frozen"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    stripe_session_id = models.CharField(max_length=255, unique=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    amount_total = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    allocation = models.OneToOneField(
        Allocation, on_delete=models.PROTECT, null=True, blank=True, related_name="purchase"
    )
    credited_at = models.DateTimeField(null=True, blank=True)
    # Refunds: the highest cumulative amount Stripe reported refunded, and the SU taken back
    # from the allocation for it (what could not be taken back is a RefundShortfall).
    amount_refunded = models.BigIntegerField(default=0)
    su_reversed = models.DecimalField(max_digits=18, decimal_places=4, default=ZERO)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="purchase_quantity_positive"),
            models.CheckConstraint(condition=Q(su_amount__gt=0), name="purchase_su_positive"),
            models.CheckConstraint(
                condition=Q(su_reversed__gte=0) & Q(su_reversed__lte=F("su_amount")),
                name="purchase_reversed_within_bought",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.pack.name} for {self.project} ({self.status})"

    @property
    def is_refunded(self) -> bool:
        return self.amount_refunded > 0


class RefundShortfall(models.Model):
    """SU refunded in money by Stripe that had already been spent: the organization owes them."""

    purchase = models.OneToOneField(Purchase, on_delete=models.PROTECT, related_name="shortfall")
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="refund_shortfalls"
    )
    su_amount = models.DecimalField(max_digits=18, decimal_places=4, default=ZERO)
    amount = models.BigIntegerField(default=0, help_text="Money equivalent, minor units")
    currency = models.CharField(max_length=3, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(su_amount__gte=0), name="shortfall_non_negative")
        ]

    def __str__(self) -> str:
        return f"{self.organization} owes {self.su_amount} SU (purchase {self.purchase.uuid})"


class StripeEvent(models.Model):
    """A verified webhook event, stored once by its Stripe id and processed by a task."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        # Waiting for another event (a refund before its checkout completed).
        DEFERRED = "deferred", "Deferred"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed (will retry)"

    stripe_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    # What the event waits for when deferred (a charge's payment intent).
    related_id = models.CharField(max_length=255, blank=True, db_index=True)
    livemode = models.BooleanField(default=False)
    api_version = models.CharField(max_length=50, blank=True)
    stripe_created = models.DateTimeField()
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-stripe_created", "-id"]
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_id} ({self.status})"

    @property
    def data_object(self) -> dict[str, Any]:
        return dict(self.payload.get("data", {}).get("object") or {})


class PostpaidPlan(models.Model):
    """An organization billed monthly for what it uses, up to a credit limit.

    The credit limit is the `credited` amount of a `postpaid` allocation on one project;
    every charge on it is reported to Stripe as meter events.
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.PROTECT, related_name="postpaid_plan"
    )
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    allocation = models.OneToOneField(
        Allocation, on_delete=models.PROTECT, null=True, blank=True, related_name="postpaid_plan"
    )
    credit_limit = models.DecimalField(max_digits=18, decimal_places=4)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "post-paid plan"
        constraints = [
            models.CheckConstraint(condition=Q(credit_limit__gt=0), name="postpaid_limit_positive")
        ]

    def __str__(self) -> str:
        return f"Post-paid plan of {self.organization} ({self.credit_limit} SU)"


class MeterReport(models.Model):
    """Post-paid charges of one customer in one hour, sent to Stripe as one meter event.

    A later version for the same hour carries charges committed after an earlier version was
    built. The identifier is derived from (customer, hour, version) and never changes, so a
    retried send can only be accepted once by Stripe.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Rejected by Stripe"

    account = models.ForeignKey(
        BillingAccount, on_delete=models.PROTECT, related_name="meter_reports"
    )
    stripe_customer_id = models.CharField(max_length=255)
    hour = models.DateTimeField()
    version = models.PositiveIntegerField()
    value = models.DecimalField(
        max_digits=18, decimal_places=4, help_text="SU charged (sent as value × 10 000)"
    )
    identifier = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-hour", "-version"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "hour", "version"], name="meter_report_unique_version"
            ),
            models.CheckConstraint(condition=Q(value__gt=0), name="meter_report_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.value} SU for {self.stripe_customer_id} at {self.hour:%Y-%m-%d %H}:00"

    @property
    def meter_value(self) -> int:
        return int(self.value * METER_UNITS_PER_SU)


class MeterReportEntry(models.Model):
    """Which ledger charge a report carries: each charge is in exactly one report."""

    report = models.ForeignKey(MeterReport, on_delete=models.PROTECT, related_name="entries")
    ledger_entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, related_name="meter_report_entry"
    )

    def __str__(self) -> str:
        return f"{self.ledger_entry_id} in report {self.report_id}"


class Invoice(models.Model):
    """Our copy of a Stripe invoice, kept current from invoice.* webhooks."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        PAID = "paid", "Paid"
        UNCOLLECTIBLE = "uncollectible", "Uncollectible"
        VOID = "void", "Void"

    # Stripe only moves an invoice forward (draft → open → uncollectible → paid | void), so
    # a snapshot with a lower rank is older whatever order it arrives in.
    RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}

    stripe_id = models.CharField(max_length=255, unique=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="invoices"
    )
    number = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, blank=True)
    amount_due = models.BigIntegerField(default=0)
    amount_paid = models.BigIntegerField(default=0)
    amount_remaining = models.BigIntegerField(default=0)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    hosted_invoice_url = models.URLField(max_length=2000, blank=True)
    invoice_pdf = models.URLField(max_length=2000, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    stripe_created = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    first_payment_failed_at = models.DateTimeField(null=True, blank=True)
    # The (status rank, time) of the snapshot the fields above come from.
    snapshot_rank = models.PositiveSmallIntegerField(default=0)
    snapshot_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-stripe_created", "-id"]
        indexes = [models.Index(fields=["organization", "status"])]

    def __str__(self) -> str:
        return f"Invoice {self.number or self.stripe_id} ({self.status})"
