"""Celery tasks: thin wrappers that load ids and call one service."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.core.cache import cache

from jobs import services
from jobs.backends.base import BackendUnavailable
from jobs.models import ClusterAccessRequest
from jobs.provisioning import ProvisionUnavailable
from quotas.models import Cluster

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


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(ProvisionUnavailable,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=200,
)
def cluster_access_provision_task(self: Any, request_id: int) -> str:
    """Provision one approved access request (idempotent: claim + the request's mark)."""
    request = services.access_request_provision(request_id=request_id)
    if request.state == ClusterAccessRequest.State.PROVISIONING:
        # Another worker holds a fresh claim: look again once it would count as lost.
        raise self.retry(countdown=int(services.STALE_CLAIM.total_seconds()) + 5)
    return str(request.state)


@shared_task(
    acks_late=True,
    autoretry_for=(ProvisionUnavailable,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=200,
)
def cluster_access_revoke_task(user_id: int) -> list[str]:
    """Remove the accounts of a user who left their last project on a cluster."""
    return services.cluster_access_revoke_departed(user_id=user_id)
