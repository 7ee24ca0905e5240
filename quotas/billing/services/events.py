"""Stripe webhooks: verify, store once by event id, process idempotently in any order."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from quotas import queue
from quotas.billing.exceptions import InvalidWebhook
from quotas.billing.models import StripeEvent
from quotas.billing.services.checkout import (
    charge_refund_apply,
    checkout_session_apply,
    checkout_session_fetch,
)
from quotas.billing.services.invoices import from_timestamp, invoice_apply
from quotas.billing.stripe_api import billing_enabled, webhooks_enabled

logger = logging.getLogger(__name__)

# Deferred events (a refund whose checkout has not completed yet) are retried this long.
DEFERRED_FOR = timedelta(days=7)
# A received event no task has finished after this long is queued again; a failing one is
# retried by the sweep until it has failed this often (then it waits for an admin action).
STUCK_AFTER = timedelta(minutes=10)
MAX_ATTEMPTS = 50


def webhook_receive(*, payload: bytes, signature: str | None) -> tuple[StripeEvent, bool]:
    """Verify a webhook with the Stripe library and store its event once.

    Returns (event, created). A bad, stale or missing signature raises InvalidWebhook and
    stores nothing. A new event (or a stored one not yet processed) is queued for processing
    after commit; a processed duplicate is only acknowledged.
    """
    if not webhooks_enabled():
        raise InvalidWebhook("Stripe webhooks are not configured on this portal")
    if not signature:
        raise InvalidWebhook("Missing Stripe-Signature header")
    try:
        stripe.Webhook.construct_event(
            payload,
            signature,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
        body = json.loads(payload)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"Invalid Stripe signature: {exc.user_message or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidWebhook("The webhook body is not a JSON Stripe event") from None
    if not isinstance(body, dict) or not body.get("id") or not body.get("type"):
        raise InvalidWebhook("The webhook body is not a Stripe event")
    return _store(body)


def _related_id(body: dict[str, Any]) -> str:
    obj = (body.get("data") or {}).get("object") or {}
    if body.get("type", "").startswith("charge."):
        intent = obj.get("payment_intent")
        return str((intent.get("id") if isinstance(intent, dict) else intent) or "")
    return ""


@transaction.atomic
def _store(body: dict[str, Any]) -> tuple[StripeEvent, bool]:
    obj = (body.get("data") or {}).get("object") or {}
    try:
        with transaction.atomic():
            event = StripeEvent.objects.create(
                stripe_id=str(body["id"])[:255],
                type=str(body["type"])[:100],
                object_id=str(obj.get("id") or "")[:255],
                related_id=_related_id(body)[:255],
                livemode=bool(body.get("livemode")),
                api_version=str(body.get("api_version") or "")[:50],
                stripe_created=from_timestamp(body.get("created")) or timezone.now(),
                payload=body,
            )
        created = True
    except IntegrityError:
        event = StripeEvent.objects.get(stripe_id=body["id"])
        created = False
    if event.status in (StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED):
        _enqueue(event.stripe_id)
    return event, created


def _enqueue(event_id: str) -> None:
    queue.process_stripe_event_on_commit(event_id)


# --- processing ------------------------------------------------------------------------


def _checkout(event: StripeEvent) -> str:
    session = event.data_object
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    if event.type == "checkout.session.completed" and not paid and billing_enabled():
        # A delayed payment method: Stripe may already know more than this snapshot.
        session = checkout_session_fetch(session.get("id", "")) or session
    purchase = checkout_session_apply(session=session, event_type=event.type)
    return StripeEvent.Status.PROCESSED if purchase else StripeEvent.Status.IGNORED


def _refund(event: StripeEvent) -> str:
    purchase = charge_refund_apply(charge=event.data_object)
    if purchase is not None:
        return StripeEvent.Status.PROCESSED
    # Its checkout may not have been processed yet (events come in any order): wait for it.
    if event.related_id and event.stripe_created > timezone.now() - DEFERRED_FOR:
        return StripeEvent.Status.DEFERRED
    return StripeEvent.Status.IGNORED


def _invoice(event: StripeEvent) -> str:
    row = invoice_apply(
        invoice=event.data_object, event_type=event.type, observed_at=event.stripe_created
    )
    return StripeEvent.Status.PROCESSED if row else StripeEvent.Status.IGNORED


HANDLERS: dict[str, Callable[[StripeEvent], str]] = {
    "checkout.session.completed": _checkout,
    "checkout.session.async_payment_succeeded": _checkout,
    "checkout.session.async_payment_failed": _checkout,
    "checkout.session.expired": _checkout,
    "charge.refunded": _refund,
    **{
        f"invoice.{name}": _invoice
        for name in (
            "created",
            "finalized",
            "updated",
            "paid",
            "payment_succeeded",
            "payment_failed",
            "voided",
            "marked_uncollectible",
        )
    },
}


def stripe_event_process(*, event_id: str) -> StripeEvent:
    """Apply one stored event. Every handler applies the state the event carries, so running
    twice, or after later events, changes nothing. Unknown types are marked ignored.

    Raises the handler's error (the task retries it) after recording it on the event.
    """
    event = StripeEvent.objects.get(stripe_id=event_id)
    if event.status in (StripeEvent.Status.PROCESSED, StripeEvent.Status.IGNORED):
        return event
    handler = HANDLERS.get(event.type)
    try:
        status = handler(event) if handler else StripeEvent.Status.IGNORED
    except Exception as exc:
        StripeEvent.objects.filter(pk=event.pk).update(
            status=StripeEvent.Status.FAILED,
            attempts=F("attempts") + 1,
            last_error=repr(exc)[:2000],
        )
        raise
    done = status != StripeEvent.Status.DEFERRED
    StripeEvent.objects.filter(pk=event.pk).exclude(status=StripeEvent.Status.PROCESSED).update(
        status=status,
        attempts=F("attempts") + 1,
        last_error="",
        processed_at=timezone.now() if done else None,
    )
    event.refresh_from_db()
    return event


def stripe_events_sweep(*, now: datetime | None = None) -> list[str]:
    """Queue again the events that are stuck, failed or deferred (Stripe also redelivers)."""
    now = now or timezone.now()
    ids = list(
        StripeEvent.objects.filter(
            status__in=(StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED),
            received_at__lt=now - STUCK_AFTER,
            attempts__lt=MAX_ATTEMPTS,
        ).values_list("stripe_id", flat=True)[:1000]
    ) + list(
        StripeEvent.objects.filter(status=StripeEvent.Status.DEFERRED).values_list(
            "stripe_id", flat=True
        )[:1000]
    )
    queue.process_stripe_events(ids)
    return ids


@transaction.atomic
def stripe_events_requeue(*, event_ids: list[str]) -> int:
    """Process the given events again (an admin action); processed ones stay as they are."""
    events = list(StripeEvent.objects.filter(stripe_id__in=event_ids))
    StripeEvent.objects.filter(pk__in=[e.pk for e in events]).exclude(
        status=StripeEvent.Status.PROCESSED
    ).update(status=StripeEvent.Status.RECEIVED)
    for event in events:
        _enqueue(event.stripe_id)
    return len(events)
