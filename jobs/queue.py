"""Every Celery task the jobs app queues is queued here, so that what runs later, with which
arguments and how a broker outage is survived, reads in one place. Tasks are imported inside
the functions: jobs.tasks imports the services, which queue through this module.

A broker that is down never fails the caller's own work: what could not be queued is logged,
and a sweep redoes it (forward_pending_task for forwarding, the next beat tick for syncs and
pushes, staff approving again for provisioning)."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.core.cache import cache

from portal.cache import redis_key

logger = logging.getLogger(__name__)

FORWARD_DEBOUNCE_KEY = "jobs:forward:{cluster_id}"
# A lost "forward now" task blocks new ones for at most this long (forward_pending_task is the
# backstop for the jobs it would have taken).
FORWARD_DEBOUNCE_SECONDS = 5
FORWARD_RETRY_SECONDS = 2


def forward_cluster(cluster_id: int, *, coalesce: bool = True) -> None:
    """Queue one "forward this cluster's pending jobs" task, unless one is queued and not yet
    started: many submissions within a few milliseconds share one task. Each call counts one
    submission on the cluster's key, which the waiting task watches (forward_submissions); the
    task deletes the key before it claims, so a job committed later is either claimed by it or
    queues a task of its own (see forward_cluster_task). `coalesce`: the task first waits a
    moment for more."""
    from jobs.tasks import forward_cluster_task

    try:
        if _shared_cache() and not _count_submission(cluster_id):
            return
        forward_cluster_task.delay(cluster_id, coalesce=coalesce)
    except Exception:
        # The job stays pending and forward_pending_task picks it up.
        logger.exception("Could not queue forwarding on cluster %s", cluster_id)


def _count_submission(cluster_id: int) -> bool:
    """One more submission on the cluster's key; True when this call created the key (no
    forwarding task is queued and not yet started). On Redis in one round trip and one
    MULTI/EXEC: the key is made with its expiry if missing, then incremented, with no task's
    delete in between (which would leave the INCR a key without expiry and no task queued)."""
    key = FORWARD_DEBOUNCE_KEY.format(cluster_id=cluster_id)
    counter = redis_key(key)
    if counter is None:  # another shared cache: no count (the task waits its whole moment)
        return bool(cache.add(key, "queued", FORWARD_DEBOUNCE_SECONDS))
    pipe = counter.client.pipeline(transaction=True)
    pipe.set(counter.name, 0, nx=True, ex=FORWARD_DEBOUNCE_SECONDS)
    pipe.incr(counter.name)
    created, _ = pipe.execute()
    return bool(created)


def forward_submissions(*, cluster_id: int) -> int | None:
    """How many submissions the cluster's key has counted since it was made (None: no key, or
    a cache that does not count)."""
    count = cache.get(FORWARD_DEBOUNCE_KEY.format(cluster_id=cluster_id))
    return count if isinstance(count, int) else None


def forward_debounce_clear(*, cluster_id: int) -> None:
    cache.delete(FORWARD_DEBOUNCE_KEY.format(cluster_id=cluster_id))


@functools.cache
def _shared_cache() -> bool:
    """Debouncing needs a cache that the API processes and the workers share."""
    backend = settings.CACHES["default"]["BACKEND"]
    return "locmem" not in backend and "dummy" not in backend


def forward_recovery(cluster_id: int) -> None:
    """The sweep's forward of a cluster's lost jobs (every attempt, looked up before resent)."""
    from jobs.tasks import forward_cluster_task

    forward_cluster_task.delay(cluster_id, coalesce=False, recover=True)


def forward_sweep() -> None:
    from jobs.tasks import forward_pending_task

    forward_pending_task.delay()


def forward_retry(job_id: int) -> None:
    """One job's own retry after a transient failure, a moment later."""
    from jobs.tasks import forward_job_task

    try:
        forward_job_task.apply_async((job_id,), countdown=FORWARD_RETRY_SECONDS)
    except Exception:
        logger.exception("Could not queue the retry of job %s", job_id)


def sync_cluster(cluster_id: int, *, quiet: bool = False) -> None:
    """A sync of one cluster; `quiet`: a broker outage is logged, not raised."""
    from jobs.tasks import sync_cluster_task

    try:
        sync_cluster_task.delay(cluster_id)
    except Exception:
        if not quiet:
            raise
        logger.exception("Could not queue a sync of cluster %s", cluster_id)


def accounts_sync(cluster_id: int) -> None:
    from jobs.tasks import accounts_sync_task

    accounts_sync_task.delay(cluster_id)


def access_provision(request_id: int) -> None:
    from jobs.tasks import cluster_access_provision_task

    try:
        cluster_access_provision_task.delay(request_id)
    except Exception:  # staff can approve again after a failure
        logger.exception("Could not queue provisioning of access request %s", request_id)


def access_revoke(user_id: int) -> None:
    from jobs.tasks import cluster_access_revoke_task

    cluster_access_revoke_task.delay(user_id)


def storage_recount(usage_id: int) -> None:
    """A recount of one project folder's usage from disk (the hourly sweep queues one each)."""
    from jobs.storage.tasks import storage_recount_task

    storage_recount_task.delay(usage_id)
