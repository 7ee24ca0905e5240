"""Billing writes: one function per use case, called by the web views, the API, the webhook
task, the beat tasks and the management commands alike."""

from __future__ import annotations

from quotas.billing.services.accounts import billing_account_ensure_customer, payment_enforce
from quotas.billing.services.checkout import (
    charge_refund_apply,
    checkout_session_apply,
    checkout_start,
)
from quotas.billing.services.events import (
    stripe_event_process,
    stripe_events_sweep,
    webhook_receive,
)
from quotas.billing.services.invoices import invoice_apply, invoices_sync
from quotas.billing.services.metering import (
    DriftLine,
    meter_drift,
    meter_reports_build,
    meter_reports_send,
)
from quotas.billing.services.postpaid import postpaid_plan_close, postpaid_plan_open

__all__ = [
    "DriftLine",
    "billing_account_ensure_customer",
    "charge_refund_apply",
    "checkout_session_apply",
    "checkout_start",
    "invoice_apply",
    "invoices_sync",
    "meter_drift",
    "meter_reports_build",
    "meter_reports_send",
    "payment_enforce",
    "postpaid_plan_close",
    "postpaid_plan_open",
    "stripe_event_process",
    "stripe_events_sweep",
    "webhook_receive",
]
