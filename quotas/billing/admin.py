"""Admin: SU packs are edited here; everything mirrored from Stripe is read-only."""

from __future__ import annotations

from typing import TypeVar

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from quotas.billing.models import (
    BillingAccount,
    Invoice,
    MeterReport,
    PostpaidPlan,
    Purchase,
    RefundShortfall,
    StripeEvent,
    SuPack,
)
from quotas.billing.services.events import stripe_events_requeue
from quotas.billing.services.metering import meter_reports_retry

_ModelT = TypeVar("_ModelT", bound=Model)


class ReadOnlyAdmin(admin.ModelAdmin[_ModelT]):
    """Rows written by services and webhooks only: viewable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _ModelT | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _ModelT | None = None) -> bool:
        return False


@admin.register(SuPack)
class SuPackAdmin(admin.ModelAdmin[SuPack]):
    list_display = ["name", "slug", "su_amount", "price_display", "stripe_price_id", "active"]
    list_filter = ["active"]
    search_fields = ["name", "slug", "stripe_price_id"]
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ["clusters"]


@admin.register(BillingAccount)
class BillingAccountAdmin(ReadOnlyAdmin[BillingAccount]):
    list_display = ["organization", "stripe_customer_id", "email", "suspended_at"]
    search_fields = ["organization__name", "stripe_customer_id"]


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin[Purchase]):
    list_display = [
        "uuid",
        "organization",
        "project",
        "pack",
        "quantity",
        "su_amount",
        "status",
        "amount_refunded",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["uuid", "stripe_session_id", "stripe_payment_intent_id"]


@admin.register(RefundShortfall)
class RefundShortfallAdmin(ReadOnlyAdmin[RefundShortfall]):
    list_display = ["organization", "purchase", "su_amount", "amount", "currency", "settled_at"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin[StripeEvent]):
    list_display = ["stripe_id", "type", "status", "attempts", "stripe_created", "received_at"]
    list_filter = ["status", "type"]
    search_fields = ["stripe_id", "object_id", "related_id"]
    actions = ["process_again"]

    @admin.action(description="Process the selected events again (idempotent)")
    def process_again(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        count = stripe_events_requeue(event_ids=list(queryset.values_list("stripe_id", flat=True)))
        self.message_user(request, f"{count} event(s) queued", messages.SUCCESS)


@admin.register(PostpaidPlan)
class PostpaidPlanAdmin(ReadOnlyAdmin[PostpaidPlan]):
    list_display = ["organization", "project", "credit_limit", "active", "created_at"]


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin[MeterReport]):
    list_display = [
        "stripe_customer_id",
        "hour",
        "version",
        "value",
        "status",
        "attempts",
        "next_attempt_at",
        "identifier",
    ]
    list_filter = ["status"]
    search_fields = ["stripe_customer_id", "identifier"]
    actions = ["retry"]

    @admin.action(description="Send the selected rejected reports again")
    def retry(self, request: HttpRequest, queryset: QuerySet[MeterReport]) -> None:
        count = meter_reports_retry(report_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} report(s) queued", messages.SUCCESS)


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin[Invoice]):
    list_display = [
        "number",
        "organization",
        "status",
        "amount_due",
        "amount_paid",
        "currency",
        "first_payment_failed_at",
        "stripe_created",
    ]
    list_filter = ["status"]
    search_fields = ["number", "stripe_id", "organization__name"]
