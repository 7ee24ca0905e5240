"""Forwarding: hand pending jobs to their cluster, one at a time (job_forward) or a
cluster's first attempts together (jobs_forward_batch), record the backend ids, reject
what the cluster refuses (hold released) and find the jobs whose forwarding was lost.
Idempotent by claim (pending -> submitting) plus the portal uuid the backend tags each
job with; no scheduler call happens inside a database transaction."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from jobs import queue
from jobs.backends import get_backend
from jobs.backends.base import AccountUnknown, BackendError, BackendUnavailable
from jobs.models import Job, JobEvent
from jobs.selectors import jobs_to_forward
from jobs.services.scheduler_accounts import account_settling
from jobs.services.specs import SPEC_RELATED, job_spec
from quotas.models import ZERO
from quotas.services import ledger_settle
from quotas.services.batch import bulk_insert, bulk_set

logger = logging.getLogger(__name__)

FORWARD_BATCH = 200
FORWARD_THREADS = 4
T = TypeVar("T")
R = TypeVar("R")


# --- the forwarder's claim -------------------------------------------------------------------


def lost_forward_after() -> timedelta:
    """A pending or submitting job untouched this long has no live forwarder (settings)."""
    return timedelta(seconds=settings.JOBS_LOST_FORWARD_SECONDS)


def _run_claimed(ids: Sequence[int], call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`call` over `items` (in order) from a few threads, while this thread renews the claim of
    the jobs `ids` (their updated_at) every quarter of lost_forward_after(): a forwarder that is
    alive, however slow its cluster, is never taken for lost, and a killed one stops renewing,
    so the sweep recovers its jobs within a minute."""
    every = max(1.0, lost_forward_after().total_seconds() / 4)
    with ThreadPoolExecutor(max(1, min(FORWARD_THREADS, len(items)))) as pool:
        futures = [pool.submit(call, item) for item in items]
        while True:
            _, running = wait(futures, timeout=every)
            if not running:
                break
            Job.objects.filter(pk__in=ids, state=Job.State.SUBMITTING).update(
                updated_at=timezone.now()
            )
    return [future.result() for future in futures]


# --- forwarding ----------------------------------------------------------------------------


def job_forward(*, job_id: int) -> Job:
    """Hand a pending job to its cluster once: claim it, look for a backend job already carrying
    its uuid, else submit. Unavailable cluster -> back to pending and BackendUnavailable is
    re-raised (the task retries); permanent BackendError -> rejected and the hold released."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=Job.State.PENDING).update(
        state=Job.State.SUBMITTING, updated_at=now
    )
    job = Job.objects.select_related(*SPEC_RELATED).get(pk=job_id)
    if not claimed:
        return job  # someone else forwarded it (or it was cancelled)
    try:
        if not job.cluster.enabled:
            raise BackendUnavailable(f"Cluster {job.cluster.name} is disabled")
        backend = get_backend(job.cluster)

        def find_or_submit(target: Job) -> tuple[str, bool]:
            # Only an earlier attempt (its answer lost, or recovered from a dead forwarder) can
            # have left a job on the cluster: a first attempt skips the lookup, which on Slurm
            # lists every job of the cluster.
            if target.forward_attempts and (known := backend.find([target.uuid]).get(target.uuid)):
                return known, True
            return backend.submit(job_spec(target)), False

        ((backend_id, found),) = _run_claimed([job.pk], find_or_submit, [job])
    except BackendError as exc:
        if waiting := _account_waiting(job, exc):
            _forward_failed(job.pk, exc, retry=False, reason=waiting)
            raise BackendUnavailable(waiting) from exc
        _reject(job, f"Rejected by the cluster: {exc}")
        return job
    except Exception as exc:
        Job.objects.filter(pk=job_id, state=Job.State.SUBMITTING).update(
            state=Job.State.PENDING,
            forward_attempts=F("forward_attempts") + 1,
            state_reason=f"Cluster unavailable, will retry: {exc}"[:500],
            updated_at=timezone.now(),
        )
        raise
    _record_forwarded(job, backend_id, found=found)
    job.refresh_from_db()
    return job


def jobs_forward_batch(
    *, cluster_id: int, limit: int = FORWARD_BATCH, lost_before: datetime | None = None
) -> int:
    """Forward up to `limit` of a cluster's pending first-attempt jobs at once: claim them in one
    transaction (rows another forwarder holds are skipped), submit them from a few threads over
    the backend's pooled session, then record every backend id in one transaction. Returns how
    many were claimed. Jobs already retrying are left to their own forward_job_task. A cluster
    that is unavailable puts the claimed jobs back to pending and queues a per-job retry; a
    permanent error rejects only the job it concerns.

    `lost_before` (the sweep's recovery): claim instead the pending jobs of every attempt not
    touched since then; those tried before are first looked up by uuid in one backend call,
    and only the ones the cluster does not know are submitted."""
    ids = _claim(cluster_id=cluster_id, limit=limit, lost_before=lost_before)
    if not ids:
        return 0
    jobs = jobs_to_forward(ids)
    if not jobs:
        return len(ids)
    cluster = jobs[0].cluster
    known: dict[uuid.UUID, str] = {}
    retried = [job for job in jobs if job.forward_attempts]
    if retried:
        try:
            if not cluster.enabled:
                raise BackendUnavailable(f"Cluster {cluster.name} is disabled")
            known = get_backend(cluster).find([job.uuid for job in retried])
        except Exception as lookup_failed:
            # Unsure what the cluster holds: none of them may be submitted now.
            for job in retried:
                _forward_failed(job.pk, lookup_failed, retry=lost_before is None)
            jobs = [job for job in jobs if not job.forward_attempts]

    def submit(job: Job) -> tuple[Job, str, Exception | None]:
        if job.uuid in known:
            return job, known[job.uuid], None
        try:
            if not cluster.enabled:
                raise BackendUnavailable(f"Cluster {cluster.name} is disabled")
            return job, get_backend(cluster).submit(job_spec(job)), None
        except Exception as exc:
            return job, "", exc

    outcomes = _run_claimed([job.pk for job in jobs], submit, jobs)
    jobs_record_forwarded(
        [(job, backend_id) for job, backend_id, exc in outcomes if not exc],
        found={job.pk for job in retried if job.uuid in known},
    )
    for job, _, exc in outcomes:
        if exc is None:
            continue
        waiting = _account_waiting(job, exc)
        if isinstance(exc, BackendError) and not waiting:
            _reject(job, f"Rejected by the cluster: {exc}")
        else:
            _forward_failed(job.pk, exc, retry=lost_before is None, reason=waiting)
    return len(ids)


def _claim(*, cluster_id: int, limit: int, lost_before: datetime | None) -> list[int]:
    """Move up to `limit` of the cluster's pending jobs (first attempts, or with `lost_before`
    those untouched since then) to submitting and return their ids; rows another forwarder
    holds are skipped. On PostgreSQL ONE statement (the claim is a single UPDATE whose
    subquery locks with SKIP LOCKED), else a locking read and an UPDATE in a transaction."""
    now, pending = timezone.now(), Job.State.PENDING
    if connection.vendor == "postgresql":
        which = "forward_attempts = 0" if lost_before is None else "updated_at < %s"
        table = Job._meta.db_table
        sql = f"""
            UPDATE {table} SET state = %s, updated_at = %s
            WHERE state = %s AND id IN (
                SELECT id FROM {table} WHERE cluster_id = %s AND state = %s AND {which}
                ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
            )
            RETURNING id"""  # noqa: S608 (the table from the model; every value is a parameter)
        params: list[Any] = [Job.State.SUBMITTING, now, pending, cluster_id, pending]
        params += [limit] if lost_before is None else [lost_before, limit]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return sorted(row[0] for row in cursor.fetchall())
    claimable = Job.objects.select_for_update(skip_locked=True).filter(
        cluster_id=cluster_id, state=pending
    )
    if lost_before is None:
        claimable = claimable.filter(forward_attempts=0)
    else:
        claimable = claimable.filter(updated_at__lt=lost_before)
    with transaction.atomic():
        ids = list(claimable.order_by("pk").values_list("pk", flat=True)[:limit])
        Job.objects.filter(pk__in=ids).update(state=Job.State.SUBMITTING, updated_at=now)
    return ids


def _account_waiting(job: Job, exc: Exception) -> str:
    """Why a refusal of the job's account is not final yet ("" = it is, or another error):
    the portal has just set the account or user up and the cluster may not know it yet."""
    if not isinstance(exc, AccountUnknown):
        return ""
    return account_settling(
        cluster=job.cluster,
        project_id=job.project_id,
        username=job.cluster_username,
        submitted=job.created_at,
    )


def _forward_failed(job_id: int, exc: Exception, *, retry: bool = True, reason: str = "") -> None:
    """Back to pending after a transient failure; its own task retries it with backoff
    (`retry`), else the next sweep retries it with the cluster's other lost jobs. `reason`
    (waiting for the cluster account) replaces the default state reason and is told once in
    the job's events."""
    logger.warning("Forwarding job %s failed, will retry: %s", job_id, reason or exc)
    now = timezone.now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job_id, state=Job.State.SUBMITTING).update(
            state=Job.State.PENDING,
            forward_attempts=F("forward_attempts") + 1,
            state_reason=(reason or f"Cluster unavailable, will retry: {exc}")[:500],
            updated_at=now,
        )
        if updated and reason and not JobEvent.objects.filter(job_id=job_id, message=reason):
            JobEvent.objects.create(
                job_id=job_id,
                from_state=Job.State.SUBMITTING,
                to_state=Job.State.PENDING,
                message=reason[:1000],
                created_at=now,
            )
    if retry:
        queue.forward_retry(job_id)


def jobs_record_forwarded(done: Sequence[tuple[Job, str]], *, found: Collection[int] = ()) -> None:
    """Record the backend ids of many forwarded jobs (as _record_forwarded does for one): the
    jobs still submitting (or pending) become queued with their backend id, each with its
    event. On PostgreSQL ONE statement (rows locked in id order, updated from arrays, events
    inserted from what was updated), else three in a transaction. `found`: pks of the jobs
    found on the cluster rather than submitted."""
    if not done:
        return
    now = timezone.now()
    backend_ids = {job.pk: backend_id for job, backend_id in done}
    if connection.vendor == "postgresql":
        _record_forwarded_at_once(backend_ids, found=found, now=now)
    else:
        _record_forwarded_portable(backend_ids, found=found, now=now)


def _record_forwarded_at_once(
    backend_ids: dict[int, str], *, found: Collection[int], now: datetime
) -> None:
    jobs, events = Job._meta.db_table, JobEvent._meta.db_table
    sql = f"""
        WITH v AS (
            SELECT * FROM UNNEST(%s::bigint[], %s::text[]) AS v(id, backend_id)
        ), locked AS MATERIALIZED (
            SELECT j.id FROM {jobs} j JOIN v ON v.id = j.id
            WHERE j.state IN (%s, %s) ORDER BY j.id FOR UPDATE OF j
        ), done AS (
            UPDATE {jobs} j
            SET state = %s, backend_id = v.backend_id, submitted_at = %s, state_reason = '',
                updated_at = %s
            FROM v JOIN locked ON locked.id = v.id
            WHERE j.id = v.id AND j.state IN (%s, %s)
            RETURNING j.id, v.backend_id
        )
        INSERT INTO {events} (job_id, from_state, to_state, message, created_at, actor_id)
        SELECT id, %s, %s,
               CASE WHEN id = ANY(%s::bigint[]) THEN 'Found on' ELSE 'Submitted to' END
               || ' the cluster as ' || backend_id,
               %s, NULL
        FROM done"""  # noqa: S608 (tables from the models; every value is a parameter)
    forwardable = [Job.State.SUBMITTING, Job.State.PENDING]
    params: list[Any] = [
        list(backend_ids), list(backend_ids.values()),
        *forwardable,
        Job.State.QUEUED, now, now,
        *forwardable,
        Job.State.SUBMITTING, Job.State.QUEUED, [pk for pk in found if pk in backend_ids], now,
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@transaction.atomic
def _record_forwarded_portable(
    backend_ids: dict[int, str], *, found: Collection[int], now: datetime
) -> None:
    ids = list(
        Job.objects.select_for_update()
        .filter(pk__in=backend_ids, state__in=(Job.State.SUBMITTING, Job.State.PENDING))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not ids:
        return
    bulk_set(
        Job,
        ("state", "backend_id", "submitted_at", "state_reason", "updated_at"),
        [(pk, Job.State.QUEUED, backend_ids[pk], now, "", now) for pk in ids],
    )
    bulk_insert(
        JobEvent,
        ("job_id", "from_state", "to_state", "message", "created_at"),
        [
            (
                pk,
                Job.State.SUBMITTING,
                Job.State.QUEUED,
                f"{'Found on' if pk in found else 'Submitted to'} the cluster as {backend_ids[pk]}",
                now,
            )
            for pk in ids
        ],
    )


@transaction.atomic
def _record_forwarded(job: Job, backend_id: str, *, found: bool) -> None:
    now = timezone.now()
    updated = Job.objects.filter(
        pk=job.pk, state__in=(Job.State.SUBMITTING, Job.State.PENDING)
    ).update(
        state=Job.State.QUEUED,
        backend_id=backend_id,
        submitted_at=now,
        state_reason="",
        updated_at=now,
    )
    if updated:
        how = "Found on the cluster" if found else "Submitted to the cluster"
        JobEvent.objects.create(
            job=job,
            from_state=Job.State.SUBMITTING,
            to_state=Job.State.QUEUED,
            message=f"{how} as {backend_id}",
            created_at=now,
        )


@transaction.atomic
def _reject(job: Job, reason: str) -> None:
    now = timezone.now()
    updated = Job.objects.filter(pk=job.pk, state=Job.State.SUBMITTING).update(
        state=Job.State.REJECTED,
        state_reason=reason[:500],
        ended_at=now,
        finalized_at=now,
        charged_cost=ZERO,
        updated_at=now,
    )
    if not updated:
        return
    if job.hold is not None:
        ledger_settle(actor=None, hold=job.hold, actual=ZERO, memo=f"Job {job.uuid} rejected")
    JobEvent.objects.create(
        job=job,
        from_state=Job.State.SUBMITTING,
        to_state=Job.State.REJECTED,
        message=reason[:1000],
        created_at=now,
    )


def jobs_recover_lost_forwards(*, older_than: timedelta | None = None) -> list[int]:
    """The sweep: jobs pending or submitting with no live forwarder for `older_than` (default
    lost_forward_after()) lost their forward (broker down at submit, worker killed holding the
    message or in the middle of a batch). Submitting ones go back to pending with one more
    attempt, so that their next forward asks the cluster for their uuid before submitting.
    Returns the ids of the clusters that have such jobs (one recovery forward for each)."""
    cutoff = timezone.now() - (older_than if older_than is not None else lost_forward_after())
    # updated_at is kept: the recovery forward claims pending jobs older than its cutoff.
    Job.objects.filter(state=Job.State.SUBMITTING, updated_at__lt=cutoff).update(
        state=Job.State.PENDING,
        forward_attempts=F("forward_attempts") + 1,
        state_reason="Its forwarder stopped; the cluster is asked for it before it is resubmitted",
    )
    return sorted(
        Job.objects.filter(state=Job.State.PENDING, updated_at__lt=cutoff)
        .order_by("cluster_id")
        .values_list("cluster_id", flat=True)
        .distinct()
    )
