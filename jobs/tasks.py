"""Celery tasks: thin wrappers that load ids and call one service."""

from __future__ import annotations

import logging
import time

from celery import Task, shared_task
from celery.signals import worker_ready
from django.core.cache import cache
from django.utils import timezone

from jobs import queue, services
from jobs.backends.base import BackendUnavailable
from jobs.models import ClusterAccessRequest
from jobs.provisioning import ProvisionUnavailable
from jobs.services.sessions import sessions_stop_idle
from quotas.models import Cluster

logger = logging.getLogger(__name__)

# A job that failed to forward is retried on its own a few times, quickly (2, 4, 8, 16 s:
# each wait under JOBS_LOST_FORWARD_SECONDS, so the sweep never takes a live retry for a lost
# one); after that the sweep retries it with the cluster's other lost jobs, one batch and one
# lookup per cluster, however long the cluster stays down.
FORWARD_QUICK_RETRIES = 4
SYNC_LOCK_SECONDS = 120
# A forwarding task waits at most this long for more submissions to join it, and forwards
# once none has come for FORWARD_QUIET_SECONDS: a stream is sent in batches, a lone
# submission a moment after it arrived.
FORWARD_COALESCE_SECONDS = 0.05
FORWARD_QUIET_SECONDS = 0.01


@shared_task(bind=True, acks_late=True, max_retries=FORWARD_QUICK_RETRIES)
def forward_job_task(self: Task[[int], None], job_id: int) -> None:
    """Hand one pending job to its cluster (idempotent: claim + uuid lookup)."""
    try:
        services.job_forward(job_id=job_id)
    except BackendUnavailable as exc:
        if self.request.retries >= FORWARD_QUICK_RETRIES:
            logger.warning("Job %s still not forwarded (%s); the sweep takes it over", job_id, exc)
            return
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from None


@shared_task(acks_late=True)
def forward_cluster_task(cluster_id: int, coalesce: bool = True, recover: bool = False) -> int:
    """Forward a cluster's pending jobs in batches (queued, debounced, by job_submit).

    A moment's wait first (`coalesce`, _coalesce; a batch submission skips it) lets the
    submissions that follow close behind join this task; then the debounce key is cleared
    BEFORE claiming, so a job committed later is either claimed here or queues a task of its
    own. A lost task costs nothing but time: forward_pending_task recovers jobs left pending
    or submitting for JOBS_LOST_FORWARD_SECONDS. `recover` (from that sweep): take the jobs of
    every attempt left untouched that long instead of the first attempts."""
    if coalesce and not forward_cluster_task.request.is_eager:
        _coalesce(cluster_id)
    queue.forward_debounce_clear(cluster_id=cluster_id)
    lost_before = timezone.now() - services.lost_forward_after() if recover else None
    total = 0
    while (
        claimed := services.jobs_forward_batch(cluster_id=cluster_id, lost_before=lost_before)
    ) > 0:
        total += claimed
        if claimed < services.FORWARD_BATCH:
            break
    return total


def _coalesce(cluster_id: int) -> None:
    """Wait while the cluster's submissions keep coming (its count moves), for at most
    FORWARD_COALESCE_SECONDS; where nothing counts them, that whole time."""
    deadline = time.monotonic() + FORWARD_COALESCE_SECONDS
    seen = queue.forward_submissions(cluster_id=cluster_id)
    if seen is None:
        time.sleep(FORWARD_COALESCE_SECONDS)
        return
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(FORWARD_QUIET_SECONDS, left))
        count = queue.forward_submissions(cluster_id=cluster_id)
        if count == seen:
            return
        seen = count


@shared_task
def forward_pending_task() -> int:
    """Beat (every JOBS_FORWARD_SWEEP_SECONDS) and at worker start: one recovery forward per
    cluster with jobs whose forwarding was lost (broker down at submit, worker killed)."""
    cluster_ids = services.jobs_recover_lost_forwards()
    for cluster_id in cluster_ids:
        queue.forward_recovery(cluster_id)
    return len(cluster_ids)


@worker_ready.connect
def _sweep_when_a_worker_starts(sender: object = None, **kwargs: object) -> None:
    """A worker coming back after a crash or a broker outage recovers at once, not a tick later."""
    queue.forward_sweep()


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
def sessions_stop_idle_task() -> int:
    """Beat, every minute: stop idle sessions (jobs.services.sessions.sessions_stop_idle)."""
    return len(sessions_stop_idle())


@shared_task
def sync_all_clusters_task() -> int:
    """Beat: one sync task per enabled cluster."""
    ids = list(Cluster.objects.filter(enabled=True).values_list("pk", flat=True))
    for cluster_id in ids:
        queue.sync_cluster(cluster_id)
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
def cluster_access_provision_task(self: Task[[int], str], request_id: int) -> str:
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
        queue.accounts_sync(cluster_id)
    return len(ids)
