"""Celery tasks of project storage: the hourly recount of every folder's usage from disk."""

from __future__ import annotations

from celery import shared_task

from jobs import queue
from jobs.storage import services
from jobs.storage.models import ProjectStorageUsage


@shared_task(acks_late=True)
def storage_recount_task(usage_id: int) -> None:
    """Recount one folder (idempotent: a walk of the folder, kept unless the portal wrote)."""
    services.storage_recount_usage(usage_id=usage_id)


@shared_task(acks_late=True)
def storage_recount_all_task() -> int:
    """Queue a recount of every folder the portal keeps a usage for (one task each)."""
    ids = list(ProjectStorageUsage.objects.order_by("pk").values_list("pk", flat=True))
    for usage_id in ids:
        queue.storage_recount(usage_id)
    return len(ids)
