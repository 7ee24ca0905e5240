"""Every Celery task the quotas app queues is queued here (today: Stripe events to process),
so what runs later and with which arguments reads in one place. Tasks are imported inside the
functions: the tasks import the services, which queue through this module."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction


def process_stripe_events(event_ids: Iterable[str]) -> None:
    """Queue one processing task per stored Stripe event, now."""
    from quotas.billing.tasks import process_stripe_event_task

    for event_id in event_ids:
        process_stripe_event_task.delay(event_id)


def process_stripe_event_on_commit(event_id: str) -> None:
    """Queue the processing of a stored Stripe event once the storing transaction commits."""
    transaction.on_commit(lambda: process_stripe_events([event_id]))
