"""Every write on jobs: submit (validate, estimate, hold), forward, sync, cancel, logs, results.

Scheduler calls never happen inside a database transaction: a slow or dead cluster must not
hold row locks. Forwarding is idempotent by claim (pending -> submitting) plus the portal uuid
the backend tags each job with; finalisation is exactly once by claiming finalized_at.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, BinaryIO

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Project, ProjectMember, User
from jobs.backends import get_backend
from jobs.backends.base import (
    UNKNOWN,
    BackendError,
    BackendUnavailable,
    JobRef,
    JobSpec,
    JobStatus,
    LogChunk,
    ResultFile,
    UsageRecord,
)
from jobs.exceptions import ClusterUnavailable, InvalidJob, JobStateError, ResultNotFound
from jobs.models import ClusterAccount, Job, JobEvent, JobTemplate
from jobs.validation import (
    JobRequest,
    check_cluster_usable,
    check_submit_access,
    validate_cluster_username,
    validate_job,
)
from portal.errors import PermissionDenied
from quotas.exceptions import InsufficientQuota, InsufficientQuotaForBatch
from quotas.models import ZERO, Cluster, Hold, Rate
from quotas.services import (
    Cost,
    Usage,
    cached_rates_at,
    cost_of,
    ledger_hold,
    ledger_hold_many,
    ledger_settle,
)
from quotas.services import estimate as quota_estimate
from quotas.services.batch import bulk_insert, bulk_set, ledger_settle_many

logger = logging.getLogger(__name__)

STALE_SUBMITTING = timedelta(seconds=60)
LOG_DEFAULT_LIMIT = 64 * 1024
LOG_MAX_LIMIT = 1024 * 1024
FINALIZE_BATCH = 1000
STREAMS = ("stdout", "stderr")
EVENT_FIELDS = ("job_id", "created_at", "from_state", "to_state", "message")
SPEC_FIELDS = (
    "name",
    "script",
    "image",
    "command",
    "partition",
    "gpus",
    "gpu_type",
    "cpus",
    "memory_mb",
    "time_limit_minutes",
    "array",
    "env",
)


# --- cluster accounts --------------------------------------------------------------------


@transaction.atomic
def cluster_account_create(
    *, actor: User | None, user: User, cluster: Cluster, username: str, uid: int | None = None
) -> ClusterAccount:
    """Map a portal user to their account on a cluster (never root or a system account)."""
    validate_cluster_username(username, uid)
    account, _ = ClusterAccount.objects.update_or_create(
        user=user, cluster=cluster, defaults={"username": username, "uid": uid}
    )
    return account


# --- estimate and submit -----------------------------------------------------------------


def qualified_project(project: Project) -> str:
    """The project's name for backends: "<organization slug>.<project slug>". Project slugs are
    unique only within an organization, and a slug never holds a dot, so this is unique."""
    return f"{project.organization.slug}.{project.slug}"


def _spec(source: Job | JobRequest, *, job_uuid: uuid.UUID, cluster_user: str) -> JobSpec:
    """What a backend sees of a stored job or of a submission: plain values, no ORM objects."""
    return JobSpec(
        uuid=job_uuid,
        name=source.name,
        project=qualified_project(source.project),
        cluster_user=cluster_user,
        script=source.script,
        image=source.image,
        command=tuple(source.command or ()),
        partition=source.partition,
        gpus=source.gpus,
        gpu_type=source.gpu_type,
        cpus=source.cpus,
        memory_mb=source.memory_mb,
        time_limit_minutes=source.time_limit_minutes,
        array=source.array,
        env=dict(source.env or {}),
    )


def _check_with_backend(request: JobRequest, *, cluster_user: str = "") -> None:
    """The cluster's own rules (backend.validate_spec): a 400 naming the first bad field."""
    problems = get_backend(request.cluster).validate_spec(
        _spec(request, job_uuid=uuid.UUID(int=0), cluster_user=cluster_user)
    )
    if problems:
        field, message = problems[0]
        raise InvalidJob(message, field=field)


def _estimate(request: JobRequest, rates: dict[tuple[str, str], Decimal] | None = None) -> Cost:
    if rates is not None:
        usage = Usage(
            seconds=request.time_limit_minutes * 60,
            gpus=request.gpus,
            gpu_type=request.gpu_type,
            cpus=request.cpus,
            memory_mb=request.memory_mb,
            tasks=request.array_size,
        )
        return cost_of(cluster=request.cluster, usage=usage, rates=rates)
    return quota_estimate(
        cluster=request.cluster,
        gpus=request.gpus,
        gpu_type=request.gpu_type,
        cpus=request.cpus,
        memory_mb=request.memory_mb,
        time_limit_minutes=request.time_limit_minutes,
        tasks=request.array_size,
    )


def job_estimate(*, user: User, data: Mapping[str, Any]) -> Cost:
    """The most a job can cost (what submit would hold); `data` holds project, cluster and
    the submit fields. Checks everything submit checks except the cluster account."""
    project, cluster = data["project"], data["cluster"]
    check_cluster_usable(user=user, project=project, cluster=cluster)
    request = validate_job(
        project=project, cluster=cluster, **{k: data[k] for k in SPEC_FIELDS if k in data}
    )
    _check_with_backend(request)
    return _estimate(request)


def _new_job(
    request: JobRequest,
    *,
    job_uuid: uuid.UUID,
    user: User,
    account: ClusterAccount,
    cost: Cost,
    hold: Hold | None,
    idempotency_key: str,
) -> Job:
    """An unsaved pending Job for a validated request (one place for both submit paths)."""
    return Job(
        uuid=job_uuid,
        project=request.project,
        user=user,
        cluster=request.cluster,
        name=request.name,
        script=request.script,
        image=request.image,
        command=list(request.command),
        partition=request.partition,
        gpus=request.gpus,
        gpu_type=request.gpu_type,
        cpus=request.cpus,
        memory_mb=request.memory_mb,
        time_limit_minutes=request.time_limit_minutes,
        array=request.array,
        array_size=request.array_size,
        env=request.env,
        cluster_username=account.username,
        estimated_cost=cost.total,
        idempotency_key=idempotency_key,
        hold=hold,
    )


@transaction.atomic
def job_submit(
    *,
    user: User,
    project: Project,
    cluster: Cluster,
    name: str,
    script: str = "",
    image: str = "",
    command: Sequence[str] = (),
    partition: str = "",
    gpus: int = 0,
    gpu_type: str = "",
    cpus: int = 1,
    memory_mb: int = 1024,
    time_limit_minutes: int = 60,
    array: str = "",
    env: Mapping[str, str] | None = None,
    idempotency_key: str = "",
) -> Job:
    """Validate against the cluster, hold the estimate, create the job (pending) and forward
    it after commit. The same user + idempotency key returns the first job."""
    idempotency_key = (idempotency_key or "").strip()
    if len(idempotency_key) > 200:
        raise InvalidJob("Idempotency-Key must be at most 200 characters", field="idempotency_key")
    if idempotency_key and (
        first := Job.objects.filter(user=user, idempotency_key=idempotency_key).first()
    ):
        return first
    account = check_submit_access(user=user, project=project, cluster=cluster)
    request = validate_job(
        project=project,
        cluster=cluster,
        name=name,
        script=script,
        image=image,
        command=command,
        partition=partition,
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=cpus,
        memory_mb=memory_mb,
        time_limit_minutes=time_limit_minutes,
        array=array,
        env=env,
    )
    _check_with_backend(request, cluster_user=account.username)
    cost = _estimate(request, rates=cached_rates_at(cluster=cluster))
    job_uuid = uuid.uuid4()
    hold = None
    message = "Submitted; nothing to hold (free cluster)"
    if cost.total > 0:
        # The hold first, so the job is stored with it in one INSERT.
        hold = ledger_hold(
            actor=user,
            project=project,
            cluster=cluster,
            amount=cost.total,
            key=f"job:{job_uuid}",
            job_uuid=job_uuid,
            memo=f"Job {request.name}",
        )
        message = f"Submitted; {hold.amount} SU held"
    job = _new_job(
        request,
        job_uuid=job_uuid,
        user=user,
        account=account,
        cost=cost,
        hold=hold,
        idempotency_key=idempotency_key,
    )
    if idempotency_key:
        try:
            with transaction.atomic():
                job.save(force_insert=True)
        except IntegrityError:
            # A concurrent request with the same key won the race: answer with its job, and
            # roll back our hold with the rest of this submission.
            first = Job.objects.filter(user=user, idempotency_key=idempotency_key).first()
            if first is None:
                raise
            transaction.set_rollback(True)
            return first
    else:
        job.save(force_insert=True)
    event = JobEvent.objects.create(
        job=job, from_state="", to_state=Job.State.PENDING, message=message
    )
    # The 201 answer is built from these, without re-reading the job's events.
    job.submit_events = [event]  # type: ignore[attr-defined]
    cluster_id = cluster.pk
    transaction.on_commit(lambda: _enqueue_cluster_forward(cluster_id))
    return job


BATCH_MAX = 500
BATCH_KEY_MAX = 190  # "batch:<key>:<index>" must fit Job.idempotency_key (200)


def _batch_key(key: str, index: int) -> str:
    return f"batch:{key}:{index}"


def _batch_replay(user: User, key: str) -> list[Job]:
    """The jobs of an earlier batch with this key, in their batch order (empty if none)."""
    prefix = _batch_key(key, 0)[:-1]
    jobs = list(Job.objects.filter(user=user, idempotency_key__startswith=prefix))
    jobs = [j for j in jobs if j.idempotency_key[len(prefix) :].isdigit()]
    return sorted(jobs, key=lambda j: int(j.idempotency_key[len(prefix) :]))


@transaction.atomic
def job_submit_many(
    *,
    user: User,
    project: Project,
    cluster: Cluster,
    jobs: Sequence[Mapping[str, Any]],
    idempotency_key: str = "",
) -> list[Job]:
    """Submit up to BATCH_MAX jobs at once, all or nothing: each is checked as job_submit
    checks it (a 400 names `jobs[i].<field>`), jobs and events are inserted in bulk, each job
    gets its own hold (key "job:<uuid>", so settlement stays per job; any hold that does not
    fit -> 402 for the whole batch with its shortfall, nothing held, no job kept), and the jobs
    are forwarded after commit by the same debounced per-cluster task as job_submit.

    Idempotency: job i of a batch stores "batch:<key>:<i>" as its idempotency key, so the same
    user + key returns the first batch's jobs in order. Two concurrent batches with one key
    race on the (user, idempotency_key) unique constraint: the loser rolls back and answers
    with the winner's jobs. New jobs carry `submit_events`; replayed ones do not."""
    idempotency_key = (idempotency_key or "").strip()
    if len(idempotency_key) > BATCH_KEY_MAX:
        raise InvalidJob(
            f"Idempotency-Key must be at most {BATCH_KEY_MAX} characters for a batch",
            field="idempotency_key",
        )
    if idempotency_key and (first := _batch_replay(user, idempotency_key)):
        return first
    if not jobs:
        raise InvalidJob("A batch needs at least one job", field="jobs")
    if len(jobs) > BATCH_MAX:
        raise InvalidJob(f"A batch holds at most {BATCH_MAX} jobs", field="jobs")
    account = check_submit_access(user=user, project=project, cluster=cluster)
    rates = cached_rates_at(cluster=cluster)
    requests: list[tuple[JobRequest, Cost]] = []
    for i, data in enumerate(jobs):
        try:
            request = validate_job(
                project=project,
                cluster=cluster,
                **{k: data[k] for k in SPEC_FIELDS if k in data and data[k] is not None},
            )
            _check_with_backend(request, cluster_user=account.username)
        except InvalidJob as exc:
            field = f"jobs[{i}].{exc.field}" if exc.field else f"jobs[{i}]"
            raise InvalidJob(exc.detail, field=field, **exc.extra) from exc
        requests.append((request, _estimate(request, rates=rates)))
    total = sum((cost.total for _, cost in requests), ZERO)
    job_uuids = [uuid.uuid4() for _ in requests]
    # Jobs and events first, holds last: placing the holds locks the project's allocation rows
    # until commit, and every other submission to the project waits on them, so as little as
    # possible (the holds and one UPDATE linking them) happens under that lock.
    new_jobs = [
        _new_job(
            request,
            job_uuid=job_uuids[i],
            user=user,
            account=account,
            cost=cost,
            hold=None,
            idempotency_key=_batch_key(idempotency_key, i) if idempotency_key else "",
        )
        for i, (request, cost) in enumerate(requests)
    ]
    try:
        with transaction.atomic():
            Job.objects.bulk_create(new_jobs)
    except IntegrityError:
        # A concurrent batch with the same key won: answer with its jobs.
        if not idempotency_key or not (first := _batch_replay(user, idempotency_key)):
            raise
        transaction.set_rollback(True)
        return first
    now = timezone.now()
    events = JobEvent.objects.bulk_create(
        JobEvent(
            job=job,
            created_at=now,
            from_state="",
            to_state=Job.State.PENDING,
            message=f"Submitted; {cost.total} SU held"
            if cost.total > 0
            else "Submitted; nothing to hold (free cluster)",
        )
        for job, (_, cost) in zip(new_jobs, requests, strict=True)
    )
    for job, event in zip(new_jobs, events, strict=True):
        job.submit_events = [event]  # type: ignore[attr-defined]
    paid = [i for i, (_, cost) in enumerate(requests) if cost.total > 0]
    try:
        placed = ledger_hold_many(
            actor=user,
            project=project,
            cluster=cluster,
            holds=[
                (
                    requests[i][1].total,
                    f"job:{job_uuids[i]}",
                    job_uuids[i],
                    f"Job {requests[i][0].name}",
                )
                for i in paid
            ],
        )
    except InsufficientQuotaForBatch as exc:
        # Nothing of the batch was held (and the jobs above roll back with this exception).
        # What could have been: what the jobs before the first misfit took, plus the best one
        # allocation still had for that job.
        raise InsufficientQuota(
            f"Insufficient quota: this batch of {len(requests)} jobs needs {total} SU "
            f"but project '{project.name}' could hold only {exc.available} SU "
            f"on cluster '{cluster.name}' (job {paid[exc.index]} did not fit; "
            f"short by {total - exc.available} SU)",
            required=total,
            available=exc.available,
        ) from exc
    for i, hold in zip(paid, placed, strict=True):
        new_jobs[i].hold = hold
    bulk_set(
        Job, ("hold",), [(new_jobs[i].pk, hold.pk) for i, hold in zip(paid, placed, strict=True)]
    )
    cluster_id = cluster.pk
    transaction.on_commit(lambda: _enqueue_cluster_forward(cluster_id))
    return new_jobs


FORWARD_DEBOUNCE_KEY = "jobs:forward:{cluster_id}"
# A lost "forward now" task blocks new ones for at most this long (forward_pending_task is the
# backstop for the jobs it would have taken).
FORWARD_DEBOUNCE_SECONDS = 5


def _enqueue_cluster_forward(cluster_id: int) -> None:
    """Queue one "forward this cluster's pending jobs" task, unless one is queued and not yet
    started: many submissions within a few milliseconds share one task. The task deletes the
    key before it claims, so a job committed after that either is claimed by it or queues a new
    task (see forward_cluster_task)."""
    from jobs.tasks import forward_cluster_task

    try:
        if _shared_cache() and not cache.add(
            FORWARD_DEBOUNCE_KEY.format(cluster_id=cluster_id), 1, FORWARD_DEBOUNCE_SECONDS
        ):
            return
        forward_cluster_task.delay(cluster_id)
    except Exception:
        # The broker (or cache) is down: the job stays pending and forward_pending_task
        # picks it up.
        logger.exception("Could not queue forwarding on cluster %s", cluster_id)


@functools.cache
def _shared_cache() -> bool:
    """Debouncing needs a cache that the API processes and the workers share."""
    backend = settings.CACHES["default"]["BACKEND"]
    return "locmem" not in backend and "dummy" not in backend


def forward_debounce_clear(*, cluster_id: int) -> None:
    cache.delete(FORWARD_DEBOUNCE_KEY.format(cluster_id=cluster_id))


def _enqueue_forward(job_id: int) -> None:
    from jobs.tasks import forward_job_task

    try:
        forward_job_task.delay(job_id)
    except Exception:
        # The broker is down: the job stays pending and forward_pending_task picks it up.
        logger.exception("Could not queue forwarding of job %s", job_id)


# --- forwarding ----------------------------------------------------------------------------


def job_spec(job: Job) -> JobSpec:
    return _spec(job, job_uuid=job.uuid, cluster_user=job.cluster_username)


def job_ref(job: Job) -> JobRef:
    return JobRef(
        uuid=job.uuid,
        backend_id=job.backend_id,
        cluster_user=job.cluster_username,
        project=qualified_project(job.project),
        tasks=job.array_size,
    )


def job_forward(*, job_id: int) -> Job:
    """Hand a pending job to its cluster once: claim it, look for a backend job already carrying
    its uuid, else submit. Unavailable cluster -> back to pending and BackendUnavailable is
    re-raised (the task retries); permanent BackendError -> rejected and the hold released."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=Job.State.PENDING).update(
        state=Job.State.SUBMITTING, updated_at=now
    )
    job = Job.objects.select_related("cluster", "project__organization").get(pk=job_id)
    if not claimed:
        return job  # someone else forwarded it (or it was cancelled)
    try:
        if not job.cluster.enabled:
            raise BackendUnavailable(f"Cluster {job.cluster.name} is disabled")
        backend = get_backend(job.cluster)
        # Only an earlier attempt (its answer lost, or recovered from a dead forwarder) can have
        # left a job on the cluster: a first attempt skips the lookup, which on Slurm lists every
        # job of the cluster.
        backend_id = backend.find([job.uuid]).get(job.uuid) if job.forward_attempts else None
        found = backend_id is not None
        if backend_id is None:
            backend_id = backend.submit(job_spec(job))
    except BackendError as exc:
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


FORWARD_BATCH = 200
FORWARD_THREADS = 4


def jobs_forward_batch(*, cluster_id: int, limit: int = FORWARD_BATCH) -> int:
    """Forward up to `limit` of a cluster's pending first-attempt jobs at once: claim them in one
    transaction (rows another forwarder holds are skipped), submit them from a few threads over
    the backend's pooled session, then record every backend id in one transaction. Returns how
    many were claimed. Jobs already retrying are left to their own forward_job_task. A cluster
    that is unavailable puts the claimed jobs back to pending and queues a per-job retry; a
    permanent error rejects only the job it concerns."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(cluster_id=cluster_id, state=Job.State.PENDING, forward_attempts=0)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        Job.objects.filter(pk__in=ids).update(state=Job.State.SUBMITTING, updated_at=now)
    jobs = list(Job.objects.select_related("cluster", "project__organization").filter(pk__in=ids))
    if not jobs:
        return len(ids)
    cluster = jobs[0].cluster

    def submit(job: Job) -> tuple[Job, str, Exception | None]:
        try:
            if not cluster.enabled:
                raise BackendUnavailable(f"Cluster {cluster.name} is disabled")
            return job, get_backend(cluster).submit(job_spec(job)), None
        except Exception as exc:
            return job, "", exc

    if len(jobs) == 1:
        outcomes = [submit(jobs[0])]
    else:
        with ThreadPoolExecutor(min(FORWARD_THREADS, len(jobs))) as pool:
            outcomes = list(pool.map(submit, jobs))
    _record_forwarded_many([(job, backend_id) for job, backend_id, exc in outcomes if not exc])
    for job, _, exc in outcomes:
        if isinstance(exc, BackendError):
            _reject(job, f"Rejected by the cluster: {exc}")
        elif exc is not None:
            _forward_failed(job.pk, exc)
    return len(ids)


def _forward_failed(job_id: int, exc: Exception) -> None:
    """Back to pending after a transient failure; its own task retries it with backoff."""
    from jobs.tasks import forward_job_task

    logger.warning("Forwarding job %s failed, will retry: %s", job_id, exc)
    Job.objects.filter(pk=job_id, state=Job.State.SUBMITTING).update(
        state=Job.State.PENDING,
        forward_attempts=F("forward_attempts") + 1,
        state_reason=f"Cluster unavailable, will retry: {exc}"[:500],
        updated_at=timezone.now(),
    )
    try:
        forward_job_task.apply_async((job_id,), countdown=2)
    except Exception:
        logger.exception("Could not queue the retry of job %s", job_id)


@transaction.atomic
def _record_forwarded_many(done: Sequence[tuple[Job, str]]) -> None:
    """_record_forwarded for many jobs: one locking read, one UPDATE from arrays of values and
    one INSERT of events (a CASE over hundreds of ids costs more than the submissions)."""
    if not done:
        return
    now = timezone.now()
    backend_ids = {job.pk: backend_id for job, backend_id in done}
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
        ("job", "from_state", "to_state", "message", "created_at"),
        [
            (
                pk,
                Job.State.SUBMITTING,
                Job.State.QUEUED,
                f"Submitted to the cluster as {backend_ids[pk]}",
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


def jobs_to_reforward(*, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Ids of pending jobs whose forwarding seems lost (not touched for `older_than`)."""
    cutoff = timezone.now() - older_than
    return list(
        Job.objects.filter(state=Job.State.PENDING, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )


# --- sync and finalisation ------------------------------------------------------------


@dataclass
class SyncResult:
    """What one sync of one cluster did; backend_calls counts calls into the backend."""

    cluster: str
    polled: int = 0
    transitions: int = 0
    finalized: int = 0
    recovered: int = 0
    missing: int = 0  # queued/running jobs this poll did not report (the lost ones included)
    lost: int = 0  # of those, ended now: missing for longer than JOBS_MISSING_GRACE_SECONDS
    backend_calls: int = 0


# Which backend-reported states may follow a portal state (anything active may end).
_ALLOWED: dict[str, frozenset[str]] = {
    Job.State.QUEUED: frozenset({Job.State.RUNNING, *Job.FINAL_STATES}),
    Job.State.RUNNING: frozenset({Job.State.QUEUED, *Job.FINAL_STATES}),
}


def cluster_sync(*, cluster: Cluster) -> SyncResult:
    """Bring every active job of the cluster up to date with ONE batched poll, record the
    transitions, end the jobs the cluster has stopped reporting for the grace period, then
    finalise newly finished jobs (one usage call) exactly once."""
    result = SyncResult(cluster=cluster.name)
    backend = get_backend(cluster)
    _recover_stale_submitting(cluster, backend, result)

    active = list(
        Job.objects.filter(
            cluster=cluster, state__in=(Job.State.QUEUED, Job.State.RUNNING)
        ).values_list("pk", "uuid", "backend_id", "cluster_username", "state", "missing_since")
    )
    if active:
        refs = [JobRef(uuid=u, backend_id=b, cluster_user=cu) for _, u, b, cu, _, _ in active if b]
        result.backend_calls += 1
        # BackendUnavailable propagates from here: only an answered poll marks jobs missing.
        statuses = backend.poll(refs)
        result.polled = len(refs)
        now = timezone.now()
        cutoff = now - timedelta(seconds=settings.JOBS_MISSING_GRACE_SECONDS)
        changes: list[tuple[int, str, JobStatus]] = []
        newly_missing: list[int] = []
        lost: list[int] = []
        reported_again: list[int] = []
        for pk, _, backend_id, _, state, missing_since in active:
            status = statuses.get(backend_id)
            if status is None:
                result.missing += 1
                if not backend_id:
                    continue  # not in the poll at all, so its silence says nothing
                if missing_since is None:
                    newly_missing.append(pk)
                elif missing_since <= cutoff:
                    lost.append(pk)
                continue
            if status.state == UNKNOWN:
                continue  # the backend cannot check it now: neither missing nor changed
            if missing_since is not None:
                reported_again.append(pk)
            if status.state != state and status.state in _ALLOWED.get(state, ()):
                changes.append((pk, state, status))
        _record_missing(newly_missing, reported_again, now)
        result.transitions = _apply_transitions(changes)
        result.lost = _end_lost(cluster, lost, cutoff=cutoff)
    result.finalized = _finalize_finished(cluster, backend, result)
    return result


MISSING_BATCH = 5000


def _record_missing(missing: Sequence[int], reported_again: Sequence[int], now: datetime) -> None:
    """Note since when the cluster stopped reporting jobs, and forget it for those it reports
    again: one UPDATE each (per MISSING_BATCH jobs), never one per job."""
    for batch in _chunks(missing, MISSING_BATCH):
        Job.objects.filter(
            pk__in=batch,
            state__in=(Job.State.QUEUED, Job.State.RUNNING),
            missing_since__isnull=True,
        ).update(missing_since=now, updated_at=now)
    for batch in _chunks(reported_again, MISSING_BATCH):
        Job.objects.filter(pk__in=batch, missing_since__isnull=False).update(
            missing_since=None, updated_at=now
        )


def _end_lost(cluster: Cluster, ids: Sequence[int], *, cutoff: datetime) -> int:
    """End the jobs the cluster has not reported since before `cutoff`; returns how many."""
    if not ids:
        return 0
    book = _RateBook(cluster)
    ended = 0
    for batch in _chunks(ids, FINALIZE_BATCH):
        ended += _end_lost_batch(cluster, batch, cutoff, book)
    return ended


@transaction.atomic
def _end_lost_batch(cluster: Cluster, ids: Sequence[int], cutoff: datetime, book: _RateBook) -> int:
    """Fail and finalise lost jobs in one transaction: charge what the portal saw them run
    (started_at to missing_since x the requested resources), release the rest of the hold.

    `failed`, not `node_fail`: node_fail says a node died, which only the scheduler can know;
    all the portal knows is that the job vanished (purged, deleted by hand, a reset cluster),
    so the generic failure with the reason is the honest record (and exit_code stays empty,
    so it does not read as the program's own failure)."""
    now = timezone.now()
    # The claim: rows still queued/running, unfinalised and missing since before the cutoff,
    # locked until commit. A job another sync moved or a sync saw again meanwhile no longer
    # matches (PostgreSQL re-checks the condition after waiting for the lock), so the writes
    # below never overwrite a newer state and a second sync finds nothing to end.
    jobs = list(
        Job.objects.select_for_update(of=("self",))
        .select_related("hold")
        .defer("script", "command", "env", "usage")
        .filter(
            pk__in=ids,
            state__in=(Job.State.QUEUED, Job.State.RUNNING),
            finalized_at__isnull=True,
            missing_since__lte=cutoff,
        )
        .order_by("pk")
    )
    if not jobs:
        return 0
    computed: list[tuple[Job, datetime, Usage, dict[str, Any], Decimal]] = []
    for job in jobs:
        since = job.missing_since or cutoff  # never None: claimed with missing_since <= cutoff
        # What the portal itself observed (no accounting record: the cluster lost the job):
        # started_at to missing_since, nothing if it never started.
        job.ended_at = since
        usage, usage_json, actual = _charge_for(cluster, job, None, book, now)
        computed.append((job, since, usage, usage_json, actual))
    settled = ledger_settle_many(
        actor=None,
        settlements=[(job.hold, actual) for job, *_, actual in computed if job.hold is not None],
        memo=f"Job usage on {cluster.name} (the cluster lost the job)",
    )
    updates: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    charges: list[tuple[Any, ...]] = []
    for job, since, usage, usage_json, actual in computed:
        reason = (
            "The cluster no longer reports this job "
            f"(missing since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)"
        )
        hold = settled[job.hold_id] if job.hold_id else None
        charged = hold.charged if hold is not None else ZERO
        updates.append(
            (
                job.pk,
                Job.State.FAILED,
                reason,
                since,
                now,
                usage.seconds,
                usage_json,
                charged,
                now,
            )
        )
        events.append((job.pk, now, job.state, Job.State.FAILED, reason))
        charges.append(
            (job.pk, now, Job.State.FAILED, Job.State.FAILED, _charge_message(usage, actual, hold))
        )
    bulk_set(
        Job,
        [
            "state",
            "state_reason",
            "ended_at",
            "finalized_at",
            "elapsed_seconds",
            "usage",
            "charged_cost",
            "updated_at",
        ],
        updates,
    )
    # The transition first, then the charge, as for a job that ended on its own.
    bulk_insert(JobEvent, EVENT_FIELDS, events + charges)
    return len(updates)


def _recover_stale_submitting(cluster: Cluster, backend: Any, result: SyncResult) -> None:
    """A forwarder that died between claim and record leaves a job in `submitting`: ask the
    backend (one find call) and either record the job it has or put it back to pending."""
    cutoff = timezone.now() - STALE_SUBMITTING
    stale = list(
        Job.objects.filter(
            cluster=cluster, state=Job.State.SUBMITTING, updated_at__lt=cutoff
        ).select_related("project")
    )
    if not stale:
        return
    result.backend_calls += 1
    found = backend.find([job.uuid for job in stale])
    absent: list[int] = []
    for job in stale:
        if backend_id := found.get(job.uuid):
            _record_forwarded(job, backend_id, found=True)
        else:
            absent.append(job.pk)
    if absent:
        Job.objects.filter(pk__in=absent, state=Job.State.SUBMITTING, updated_at__lt=cutoff).update(
            state=Job.State.PENDING,
            forward_attempts=F("forward_attempts") + 1,  # the next forward looks first
            updated_at=timezone.now(),
        )
        for job_id in absent:
            transaction.on_commit(functools.partial(_enqueue_forward, job_id))
    result.recovered = len(stale)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _apply_transitions(changes: list[tuple[int, str, JobStatus]]) -> int:
    """Write the state changes seen in one poll, skipping rows another sync moved already."""
    applied = 0
    for batch in _chunks(changes, 2000):
        now = timezone.now()
        with transaction.atomic():
            current = {
                pk: (state, started_at)
                for pk, state, started_at in Job.objects.select_for_update()
                .filter(pk__in=[pk for pk, _, _ in batch], finalized_at__isnull=True)
                .order_by("pk")
                .values_list("pk", "state", "started_at")
            }
            updates: list[tuple[Any, ...]] = []
            events: list[tuple[Any, ...]] = []
            for pk, state, status in batch:
                now_state, started_at = current.get(pk, ("", None))
                if now_state != state:
                    continue  # changed by a concurrent sync or a cancel meanwhile
                final = status.state in Job.FINAL_STATES
                updates.append(
                    (
                        pk,
                        status.state,
                        status.reason[:500],
                        status.started_at or started_at,
                        status.ended_at or (now if final else None),
                        status.exit_code,
                        now,
                    )
                )
                events.append((pk, now, state, status.state, _transition_message(status)))
            bulk_set(
                Job,
                ["state", "state_reason", "started_at", "ended_at", "exit_code", "updated_at"],
                updates,
            )
            bulk_insert(JobEvent, EVENT_FIELDS, events)
            applied += len(updates)
    return applied


def _transition_message(status: JobStatus) -> str:
    parts = []
    if status.exit_code is not None and status.state in Job.FINAL_STATES:
        parts.append(f"exit code {status.exit_code}")
    if status.reason:
        parts.append(status.reason)
    return "; ".join(parts)[:1000]


class _RateBook:
    """All rates of a cluster loaded once; answers 'rates in force at t' without a query."""

    def __init__(self, cluster: Cluster) -> None:
        self.rates = list(
            Rate.objects.filter(cluster=cluster)
            .order_by("effective_from")
            .values_list("resource", "gpu_type", "su_per_unit", "effective_from")
        )

    def at(self, when: datetime) -> dict[tuple[str, str], Decimal]:
        current: dict[tuple[str, str], Decimal] = {}
        for resource, gpu_type, value, since in self.rates:
            if since <= when:
                current[(resource, gpu_type)] = value
        return current


def _usage_for(job: Job, record: UsageRecord | None) -> tuple[Usage, dict[str, Any]]:
    if record is not None:
        usage = Usage(
            seconds=max(0, int(record.elapsed_seconds)),
            gpus=record.gpus,
            gpu_type=record.gpu_type or job.gpu_type,
            cpus=record.cpus,
            memory_mb=record.memory_mb,
            tasks=max(0, int(record.tasks)),
        )
        source = "accounting"
        origin = str(record.raw.get("source", ""))
    else:
        seconds = 0
        if job.started_at and job.ended_at:
            seconds = max(0, round((job.ended_at - job.started_at).total_seconds()))
        usage = Usage(
            seconds=seconds,
            gpus=job.gpus,
            gpu_type=job.gpu_type,
            cpus=job.cpus,
            memory_mb=job.memory_mb,
            tasks=job.array_size if seconds else 0,
        )
        source, origin = "job record", ""
    details: dict[str, Any] = {
        "elapsed_seconds": usage.seconds,
        "gpus": usage.gpus,
        "gpu_type": usage.gpu_type,
        "cpus": usage.cpus,
        "memory_mb": usage.memory_mb,
        "tasks": usage.tasks,
        "source": source,
    }
    if origin:
        # Which record the backend measured from (e.g. slurmdbd, or slurmctld's while
        # accounting lagged): shown on the job page, kept for disputes.
        details["backend_source"] = origin
    return usage, details


def _charge_for(
    cluster: Cluster, job: Job, record: UsageRecord | None, book: _RateBook, now: datetime
) -> tuple[Usage, dict[str, Any], Decimal]:
    """A finished job's usage (accounting record, else its own started_at..ended_at) and its
    cost at the rates in force when it started."""
    usage, usage_json = _usage_for(job, record)
    at = job.started_at or (record.started_at if record else None) or now
    actual = cost_of(cluster=cluster, usage=usage, rates=book.at(at)).total
    usage_json["cost"] = str(actual)
    return usage, usage_json, actual


def _charge_message(usage: Usage, actual: Decimal, hold: Hold | None) -> str:
    if hold is None:
        return f"Charged {actual} SU for {usage.seconds} s"
    return f"Charged {hold.charged} SU for {usage.seconds} s; released {hold.released}"


def _finalize_finished(cluster: Cluster, backend: Any, result: SyncResult) -> int:
    """Charge every finished, unfinalised job of the cluster: one usage call, then claim each
    (finalized_at IS NULL) and settle its hold in the same transaction."""
    finished = list(
        Job.objects.filter(
            cluster=cluster, finalized_at__isnull=True, state__in=Job.FINAL_STATES
        ).select_related("project__organization", "hold")
    )
    if not finished:
        return 0
    refs = [job_ref(job) for job in finished if job.backend_id]
    records: Mapping[str, UsageRecord] = {}
    if refs:
        result.backend_calls += 1
        try:
            records = backend.usage(refs)
        except BackendUnavailable:
            logger.warning("Usage of cluster %s unavailable; finalising later", cluster.name)
            return 0
    book = _RateBook(cluster)
    finalized = 0
    for batch in _chunks(finished, FINALIZE_BATCH):
        finalized += _finalize_batch(cluster, batch, records, book)
    return finalized


@transaction.atomic
def _finalize_batch(
    cluster: Cluster, batch: Sequence[Job], records: Mapping[str, UsageRecord], book: _RateBook
) -> int:
    now = timezone.now()
    claimed = set(
        Job.objects.select_for_update()
        .filter(pk__in=[job.pk for job in batch], finalized_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not claimed:
        return 0
    jobs = [job for job in batch if job.pk in claimed]
    computed: list[tuple[Job, Usage, dict[str, Any], Decimal]] = []
    for job in jobs:
        record = records.get(job.backend_id) if job.backend_id else None
        usage, usage_json, actual = _charge_for(cluster, job, record, book, now)
        computed.append((job, usage, usage_json, actual))
    settled = ledger_settle_many(
        actor=None,
        settlements=[(job.hold, actual) for job, _, _, actual in computed if job.hold is not None],
        memo=f"Job usage on {cluster.name}",
    )
    updates: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for job, usage, usage_json, actual in computed:
        hold = settled[job.hold_id] if job.hold_id else None
        charged = hold.charged if hold is not None else ZERO
        updates.append((job.pk, now, usage.seconds, usage_json, charged, now))
        events.append((job.pk, now, job.state, job.state, _charge_message(usage, actual, hold)))
    bulk_set(
        Job,
        ["finalized_at", "elapsed_seconds", "usage", "charged_cost", "updated_at"],
        updates,
    )
    bulk_insert(JobEvent, EVENT_FIELDS, events)
    return len(updates)


# --- cancel ----------------------------------------------------------------------------------


def _may_manage(user: User, job: Job) -> bool:
    if job.user_id == user.pk:
        return True
    return ProjectMember.objects.filter(
        project_id=job.project_id,
        user=user,
        role__in=(ProjectMember.Role.PI, ProjectMember.Role.MANAGER),
    ).exists()


def job_cancel(*, user: User, job: Job) -> Job:
    """Pending: cancelled now and the hold released. Queued/running: the cluster is asked to
    stop it and the next sync records the end (charged for what it ran). Finished: 409."""
    if not _may_manage(user, job):
        raise PermissionDenied("Only the job's owner or the project's PI or manager may cancel it")
    if job.state == Job.State.PENDING and _cancel_pending(user, job):
        job.refresh_from_db()
        return job
    job.refresh_from_db(
        from_queryset=Job.objects.select_related("cluster", "project__organization")
    )
    if job.state == Job.State.SUBMITTING:
        raise JobStateError("The job is being handed to the cluster; try again in a moment")
    if job.is_final:
        raise JobStateError(f"The job has already ended ({job.state})")
    try:
        get_backend(job.cluster).cancel(job_ref(job))
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None
    JobEvent.objects.create(
        job=job,
        from_state=job.state,
        to_state=job.state,
        message="Cancellation requested",
        actor=user,
    )
    cluster_id = job.cluster_id
    transaction.on_commit(lambda: _enqueue_sync(cluster_id))
    return job


@transaction.atomic
def _cancel_pending(user: User, job: Job) -> bool:
    now = timezone.now()
    updated = Job.objects.filter(pk=job.pk, state=Job.State.PENDING).update(
        state=Job.State.CANCELLED,
        ended_at=now,
        finalized_at=now,
        elapsed_seconds=0,
        charged_cost=ZERO,
        updated_at=now,
    )
    if not updated:
        return False
    if job.hold_id:
        hold = Hold.objects.get(pk=job.hold_id)
        ledger_settle(actor=user, hold=hold, actual=ZERO, memo=f"Job {job.uuid} cancelled")
    JobEvent.objects.create(
        job=job,
        from_state=Job.State.PENDING,
        to_state=Job.State.CANCELLED,
        message="Cancelled before it reached the cluster; hold released",
        actor=user,
        created_at=now,
    )
    return True


def _enqueue_sync(cluster_id: int) -> None:
    from jobs.tasks import sync_cluster_task

    try:
        sync_cluster_task.delay(cluster_id)
    except Exception:
        logger.exception("Could not queue a sync of cluster %s", cluster_id)


# --- logs and results --------------------------------------------------------------------


def _utf8_prefix(data: bytes) -> bytes:
    """Drop a multi-byte character cut at the end of a chunk (it comes whole next time)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: keep looking for the lead byte
        if byte & 0x80 == 0:
            return data
        needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return data if back >= needed else data[:-back]
    return data


def job_read_log(
    *, user: User, job: Job, stream: str = "stdout", offset: int = 0, limit: int | None = None
) -> LogChunk:
    """Up to `limit` bytes of the job's stdout/stderr from byte `offset` (negative: from the
    end). `eof` is true once the job has ended and everything was read."""
    if stream not in STREAMS:
        raise InvalidJob("stream must be 'stdout' or 'stderr'", field="stream")
    limit = LOG_DEFAULT_LIMIT if limit is None else limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LOG_MAX_LIMIT:
        raise InvalidJob(f"limit must be between 1 and {LOG_MAX_LIMIT}", field="limit")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise InvalidJob("offset must be a whole number", field="offset")
    if not job.backend_id:
        if offset > 0:
            raise InvalidJob(
                f"offset {offset} is past the end of the log (0 bytes)", field="offset"
            )
        return LogChunk(data=b"", next_offset=0, eof=job.is_final)
    try:
        chunk = get_backend(job.cluster).read_log(job_ref(job), stream, offset, limit)
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None
    except BackendError as exc:
        raise InvalidJob(str(exc), field="stream") from None
    if offset > 0 and chunk.next_offset < offset:
        raise InvalidJob(
            f"offset {offset} is past the end of the log ({chunk.next_offset} bytes)",
            field="offset",
        )
    data = chunk.data
    at_end = chunk.eof
    if data and not at_end:
        trimmed = _utf8_prefix(data)
        if trimmed is not data:
            at_end = False
        next_offset = chunk.next_offset - (len(data) - len(trimmed))
        data = trimmed
    else:
        next_offset = chunk.next_offset
    return LogChunk(data=data, next_offset=next_offset, eof=at_end and job.is_final)


def job_results(*, user: User, job: Job) -> list[ResultFile]:
    """Files the job wrote under its output directory, with sizes."""
    if not job.backend_id:
        return []
    try:
        return get_backend(job.cluster).list_results(job_ref(job))
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None


def clean_result_path(path: str) -> str:
    """A relative path inside the output directory, or InvalidJob naming `path`."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise InvalidJob("path must name a result file", field="path")
    if "\x00" in path:
        raise InvalidJob("path must not contain NUL bytes", field="path")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise InvalidJob("path must be relative to the job's output directory", field="path")
    parts = path.replace("\\", "/").split("/")
    if any(part == ".." for part in parts):
        raise InvalidJob("path must not contain '..'", field="path")
    return "/".join(part for part in parts if part not in ("", "."))


def job_open_result(*, user: User, job: Job, path: str) -> BinaryIO:
    """Open one result file for streaming; paths escaping the output directory are refused."""
    clean = clean_result_path(path)
    if not clean:
        raise InvalidJob("path must name a result file", field="path")
    if not job.backend_id:
        raise ResultNotFound("No such result file")
    try:
        return get_backend(job.cluster).open_result(job_ref(job), clean)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ResultNotFound("No such result file") from None
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None
    except (BackendError, PermissionError) as exc:
        raise InvalidJob(f"path: {exc}", field="path") from None


# --- templates -----------------------------------------------------------------------------


@transaction.atomic
def job_template_create(
    *,
    user: User,
    project: Project | None,
    name: str,
    cluster: Cluster | None = None,
    description: str = "",
    script: str = "",
    image: str = "",
    command: Sequence[str] = (),
    gpus: int = 0,
    gpu_type: str = "",
    cpus: int = 1,
    memory_mb: int = 1024,
    time_limit_minutes: int = 60,
) -> JobTemplate:
    """A template prefilling the submit form: for a project (its PI or manager) or global
    (facility staff)."""
    if project is None:
        if not user.is_staff:
            raise PermissionDenied("Only facility staff may create global templates")
    elif not ProjectMember.objects.filter(
        project=project,
        user=user,
        role__in=(ProjectMember.Role.PI, ProjectMember.Role.MANAGER),
    ).exists():
        raise PermissionDenied("Only the project's PI or a manager may create its templates")
    if not name.strip():
        raise InvalidJob("name must not be empty", field="name")
    max_bytes = settings.GPUC_MAX_SCRIPT_BYTES
    if len(script.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidJob(f"script must be at most {max_bytes} bytes", field="script")
    if cluster is not None and gpu_type and gpu_type not in cluster.gpu_types:
        raise InvalidJob(f"Unknown GPU type '{gpu_type}' on {cluster.name}", field="gpu_type")
    for field_name, value, minimum in (
        ("gpus", gpus, 0),
        ("cpus", cpus, 1),
        ("memory_mb", memory_mb, 1),
        ("time_limit_minutes", time_limit_minutes, 1),
    ):
        if value < minimum:
            raise InvalidJob(f"{field_name} must be at least {minimum}", field=field_name)
    return JobTemplate.objects.create(
        project=project,
        name=name.strip(),
        description=description,
        cluster=cluster,
        script=script,
        image=image,
        command=list(command or []),
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=cpus,
        memory_mb=memory_mb,
        time_limit_minutes=time_limit_minutes,
    )
