"""Celery tasks for billing: thin wrappers over one service each."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from accounts.models import Organization
from quotas.billing.models import BillingAccount, Invoice
from quotas.billing.services import (
    meter_reports_build,
    meter_reports_send,
    payment_enforce,
    stripe_event_process,
    stripe_events_sweep,
)
from quotas.billing.services.accounts import OVERDUE_STATUSES


@shared_task(
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=3600,
    max_retries=8,
)
def process_stripe_event_task(event_id: str) -> str:
    """Apply one stored Stripe event (idempotent: safe to run again)."""
    return stripe_event_process(event_id=event_id).status


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def meter_events_report_task() -> dict[str, int]:
    """Every few minutes: report closed hours of post-paid charges, send what is due."""
    built = meter_reports_build()
    result = meter_reports_send()
    return {
        "built": len(built),
        "sent": result.sent,
        "retrying": result.retrying,
        "failed": result.failed,
    }


@shared_task(acks_late=True)
def billing_daily_task() -> dict[str, int]:
    """Daily: apply the payment grace period (suspend or resume post-paid spending) and
    queue again the Stripe events that are stuck or waiting."""
    org_ids = set(
        Invoice.objects.filter(
            status__in=OVERDUE_STATUSES, first_payment_failed_at__isnull=False
        ).values_list("organization_id", flat=True)
    ) | set(
        BillingAccount.objects.filter(suspended_at__isnull=False).values_list(
            "organization_id", flat=True
        )
    )
    for org in Organization.objects.filter(pk__in=org_ids):
        payment_enforce(organization=org)
    return {"organizations": len(org_ids), "events": len(stripe_events_sweep())}


@shared_task(acks_late=True)
def stripe_events_sweep_task() -> int:
    """Every few minutes: queue again events no worker finished (e.g. the broker was down)."""
    return len(stripe_events_sweep())
