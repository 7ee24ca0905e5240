"""Celery tasks: thin wrappers that load ids and call one service."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.core.cache import cache

from jobs import services
from jobs.backends.base import BackendUnavailable
from quotas.models import Cluster

logger = logging.getLogger(__name__)

# Pending jobs untouched this long lost their forward (a retrying job is touched at least
# every retry_backoff_max seconds, so it is never re-queued twice).
LOST_FORWARD_AFTER = timedelta(minutes=10)
SYNC_LOCK_SECONDS = 120
FORWARD_COALESCE_SECONDS = 0.05


@shared_task(
    acks_late=True,
    autoretry_for=(BackendUnavailable,),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=10_000,
)
def forward_job_task(job_id: int) -> None:
    """Hand one pending job to its cluster (idempotent: claim + uuid lookup)."""
    services.job_forward(job_id=job_id)


@shared_task(acks_late=True)
def forward_cluster_task(cluster_id: int, coalesce: bool = True) -> int:
    """Forward a cluster's pending jobs in batches (queued, debounced, by job_submit).

    A moment's wait first (`coalesce`; a batch submission skips it) lets the submissions of
    the next few milliseconds join this task; then the debounce key is cleared BEFORE
    claiming, so a job committed later is either claimed here or queues a task of its own. A
    lost task costs nothing but time: forward_pending_task re-queues jobs pending for too
    long."""
    if coalesce and not forward_cluster_task.request.is_eager:
        time.sleep(FORWARD_COALESCE_SECONDS)
    services.forward_debounce_clear(cluster_id=cluster_id)
    total = 0
    while (claimed := services.jobs_forward_batch(cluster_id=cluster_id)) > 0:
        total += claimed
        if claimed < services.FORWARD_BATCH:
            break
    return total


@shared_task
def forward_pending_task() -> int:
    """Beat: re-queue pending jobs whose forwarding was lost (broker down at submit, ...)."""
    ids = services.jobs_to_reforward(older_than=LOST_FORWARD_AFTER)
    for job_id in ids:
        forward_job_task.delay(job_id)
    return len(ids)


@shared_task(acks_late=True)
def sync_cluster_task(cluster_id: int) -> dict[str, object] | None:
    """Poll one cluster's active jobs in one call and finalise those that ended."""
    lock = f"jobs:sync:{cluster_id}"
    if not cache.add(lock, "1", timeout=SYNC_LOCK_SECONDS):
        return None  # a sync of this cluster is already running; the next tick catches up
    try:
        cluster = Cluster.objects.get(pk=cluster_id)
        result = services.cluster_sync(cluster=cluster)
        return vars(result)
    finally:
        cache.delete(lock)


@shared_task
def sync_all_clusters_task() -> int:
    """Beat: one sync task per enabled cluster."""
    ids = list(Cluster.objects.filter(enabled=True).values_list("pk", flat=True))
    for cluster_id in ids:
        sync_cluster_task.delay(cluster_id)
    return len(ids)


@shared_task(acks_late=True)
def accounts_sync_task(cluster_id: int) -> dict[str, object] | None:
    """Push one cluster's project accounts and limits (changed ones, one batched call)."""
    lock = f"jobs:accounts:{cluster_id}"
    if not cache.add(lock, "1", timeout=SYNC_LOCK_SECONDS):
        return None  # a push of this cluster is running; the next tick catches up
    try:
        cluster = Cluster.objects.get(pk=cluster_id)
        return vars(services.accounts_sync(cluster=cluster))
    finally:
        cache.delete(lock)


@shared_task
def accounts_sync_all_task() -> int:
    """Beat: one account push per enabled cluster that manages project accounts."""
    ids = [c.pk for c in Cluster.objects.filter(enabled=True) if services.accounts_managed(c)]
    for cluster_id in ids:
        accounts_sync_task.delay(cluster_id)
    return len(ids)
