"""Estimate and submit: check a job's draft against the portal and the cluster's own rules,
estimate it, hold the estimate and create it pending (one job, or a batch all or nothing; both
idempotent by key), then queue its forwarding after commit (jobs.queue, debounced per
cluster)."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from types import NoneType
from typing import Any

from django.db import IntegrityError, connection, connections, transaction
from django.db.models import (
    BigIntegerField,
    CharField,
    DateTimeField,
    DecimalField,
    Field,
    ForeignKey,
    IntegerField,
    OneToOneField,
    PositiveIntegerField,
    SmallIntegerField,
    TextField,
)
from django.db.models.fields import AutoFieldMixin
from django.db.models.sql import InsertQuery
from django.utils import timezone

from accounts.models import Project, User
from jobs import queue
from jobs.backends import get_backend
from jobs.drafts import JobDraft
from jobs.exceptions import InvalidJob
from jobs.models import ClusterAccount, Job, JobEvent
from jobs.services.specs import backend_spec
from jobs.validation import (
    JobRequest,
    SubmitAccess,
    check_cluster_usable,
    check_submit_access,
    validate_job,
)
from quotas.exceptions import InsufficientQuota, InsufficientQuotaForBatch
from quotas.models import ZERO, Cluster, Hold
from quotas.services import (
    Cost,
    Usage,
    cached_rates_at,
    cost_of,
    ledger_hold,
    ledger_hold_many,
)
from quotas.services import estimate as quota_estimate
from quotas.services.batch import bulk_set
from quotas.services.ledger import hold_ctes, placed_hold

logger = logging.getLogger(__name__)


# --- estimate and submit -----------------------------------------------------------------


def _check_with_backend(request: JobRequest, *, cluster_user: str = "") -> None:
    """The cluster's own rules (backend.validate_spec): a 400 naming the first bad field."""
    problems = get_backend(request.cluster).validate_spec(
        backend_spec(request, project=request.project, cluster_user=cluster_user)
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


def job_estimate(*, user: User, project: Project, cluster: Cluster, draft: JobDraft) -> Cost:
    """The most the drafted job can cost (what submit would hold). Checks everything submit
    checks except the cluster account."""
    check_cluster_usable(user=user, project=project, cluster=cluster)
    request = validate_job(project=project, cluster=cluster, draft=draft)
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
        **request.values(),
        array_size=request.array_size,
        cluster_username=account.username,
        estimated_cost=cost.total,
        idempotency_key=idempotency_key,
        hold=hold,
    )


def _job_insert(job: Job, *, hold_from: str = "") -> tuple[str, list[Any]]:
    """The new job's INSERT as Django compiles it for job.save (RETURNING its id); with
    `hold_from`, the name of a CTE returning the new hold's `id`, as INSERT ... SELECT ... FROM
    that CTE: the job is stored with that hold, and not at all when there is none. The text is
    compiled once per process; each job's values are prepared as the compiler prepares them
    (pre_save, then get_db_prep_save), a plain value of a plain field (_as_is) directly."""
    sql, fields, as_is = _job_insert_sql(connection.alias, hold_from)
    params: list[Any] = []
    for field, plain in zip(fields, as_is, strict=True):
        if plain is not None:
            kind, adapt = plain
            value = getattr(job, field.attname)
            if value is None:
                params.append(None)
                continue
            if (kind is str and isinstance(value, str)) or (kind is int and type(value) is int):
                params.append(adapt(value) if adapt else value)
                continue
        value = field.pre_save(job, True)
        if hasattr(value, "resolve_expression"):
            raise RuntimeError(f"A job's INSERT takes plain values, not expressions: {value!r}")
        params.append(field.get_db_prep_save(value, connection=connection))
    return sql, params


# (the value's type, what the field makes of such a value for the database, or None: as it is)
_Plain = tuple[type, Callable[[Any], Any] | None]


def _as_is(field: Field[Any, Any], alias: str) -> _Plain | None:
    """How get_db_prep_save prepares a plain value of this field, for the field classes whose
    pre_save only reads the attribute and whose preparation of a str (text fields) or an int
    (integer fields and foreign keys to an auto id) is known: the text as it is, the integer
    through the backend's integer adapter (psycopg's Int4 and the like on PostgreSQL). A None
    of these, and of a date-time (not stamped on save) or decimal field, is NULL. None: the
    field's own methods prepare every value."""
    ops = connections[alias].ops
    kind = type(field)
    if kind in (CharField, TextField):
        return str, None
    if kind in (IntegerField, PositiveIntegerField, BigIntegerField, SmallIntegerField):
        internal = field.get_internal_type()
        return int, lambda value: ops.adapt_integerfield_value(value, internal)
    stamped = isinstance(field, DateTimeField) and (field.auto_now or field.auto_now_add)
    if kind is DecimalField or (kind is DateTimeField and not stamped):
        return NoneType, None  # only None is plain
    if isinstance(field, ForeignKey) and kind in (ForeignKey, OneToOneField):
        return (int, None) if isinstance(field.target_field, AutoFieldMixin) else None
    return None


@functools.cache
def _job_insert_sql(
    alias: str, hold_from: str
) -> tuple[str, tuple[Field[Any, Any], ...], tuple[_Plain | None, ...]]:
    """(the INSERT's text, the fields whose values it takes, in order, and how each prepares a
    plain value) for _job_insert."""
    meta = Job._meta
    fields = tuple(f for f in meta.local_concrete_fields if f is not meta.auto_field)
    query = InsertQuery(Job)
    query.insert_values(fields, [Job()])
    compiler = query.get_compiler(using=alias)
    compiler.returning_fields = [meta.pk]
    ((sql, _),) = compiler.as_sql()
    head, _, rest = sql.partition(" VALUES (")
    values, _, returning = rest.rpartition(") RETURNING ")
    placeholders = values.split(", ")
    if placeholders != ["%s"] * len(fields):
        raise RuntimeError(f"Unexpected INSERT of a job: {sql}")
    if hold_from:
        at = fields.index(meta.get_field("hold"))
        placeholders[at] = f"{hold_from}.id"
        select = ", ".join(placeholders)
        sql = f"{head} SELECT {select} FROM {hold_from} RETURNING {returning}"  # noqa: S608
        fields = fields[:at] + fields[at + 1 :]
    return sql, fields, tuple(_as_is(field, alias) for field in fields)


def _event_insert(event: JobEvent) -> tuple[str, list[Any]]:
    """The first event's INSERT, reading the job's id from a CTE named `job`."""
    sql = f"""INSERT INTO {JobEvent._meta.db_table}
        (job_id, created_at, from_state, to_state, message, actor_id)
        SELECT id, %s, %s, %s, %s, %s FROM job"""  # noqa: S608 (every value is a parameter)
    values = [event.created_at, event.from_state, event.to_state, event.message, event.actor_id]
    return sql, values


def _named(sql: str, params: Sequence[Any], *, prefix: str) -> tuple[str, dict[str, Any]]:
    """A statement's positional placeholders as named ones (`prefix` and the position), to join
    a statement written with named ones (hold_ctes); a None is written as NULL. Fewer parameters
    than positions: psycopg keeps the conversion of a statement of at most 50 parameters
    cached, and re-parsed the submission's 68 on every request. The text is composed once per
    statement and set of NULL positions."""
    nulls = tuple(i for i, value in enumerate(params) if value is None)
    text, names = _named_text(sql, len(params), nulls, prefix)
    return text, {
        name: value for name, value in zip(names, params, strict=True) if value is not None
    }


@functools.lru_cache(maxsize=256)
def _named_text(
    sql: str, count: int, nulls: tuple[int, ...], prefix: str
) -> tuple[str, tuple[str, ...]]:
    """(_named's text, the parameter name of each position: "" for a NULL)."""
    parts = sql.split("%s")
    if len(parts) != count + 1:
        raise RuntimeError(f"{count} parameters for {len(parts) - 1} placeholders: {sql}")
    out, names = [parts[0]], []
    for i, rest in enumerate(parts[1:]):
        if i in nulls:
            names.append("")
            out.append("NULL")
        else:
            names.append(f"{prefix}{i}")
            out.append(f"%({prefix}{i})s")
        out.append(rest)
    return "".join(out), tuple(names)


def _saved(*instances: Any) -> None:
    for instance in instances:
        instance._state.adding = False
        instance._state.db = connection.alias


def _insert_job_and_event(job: Job, event: JobEvent) -> None:
    """Insert a new job and its first event: on PostgreSQL in ONE statement (the job's INSERT
    in a WITH whose row the event's INSERT reads), else as two saves. Both get their ids; no
    signal is sent for either (none is connected)."""
    if connection.vendor != "postgresql":
        job.save(force_insert=True)
        event.job = job
        event.save(force_insert=True)
        return
    job_sql, job_params = _job_insert(job)
    event_sql, event_params = _event_insert(event)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH job AS ({job_sql}) {event_sql} RETURNING job_id, id",
            [*job_params, *event_params],
        )
        job.pk, event.pk = cursor.fetchone()
    _saved(job, event)
    event.job = job


def _insert_held_job_and_event(
    job: Job, event: JobEvent, *, user: User, project: Project, cluster: Cluster, amount: Decimal
) -> bool:
    """The common paid submission in ONE statement on PostgreSQL, outside any transaction of
    its own: the hold and its ledger entry (quotas' hold_ctes), the job stored with that hold,
    and its first event. False, with nothing written, when no allocation covered it at once
    (the caller then takes the general path, which explains a refusal)."""
    now = timezone.now()
    key = f"job:{job.uuid}"
    ctes, params, value = hold_ctes(
        actor=user, project=project, cluster=cluster, amount=amount, key=key,
        job_uuid=job.uuid, memo=f"Job {job.name}", now=now, fresh_key=True,
    )  # fmt: skip
    event.message = _submitted(value)
    job_sql, job_params = _named(*_job_insert(job, hold_from="hold"), prefix="job")
    event_sql, event_params = _named(*_event_insert(event), prefix="event")
    sql = f"""WITH {ctes}, job AS ({job_sql}), event AS ({event_sql} RETURNING id)
        SELECT (SELECT id FROM hold), (SELECT allocation_id FROM hold),
               (SELECT id FROM job), (SELECT id FROM event)"""  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, **job_params, **event_params})
        hold_id, allocation_id, job.pk, event.pk = cursor.fetchone()
    if hold_id is None:
        return False
    job.hold = placed_hold(
        hold_id=hold_id, allocation_id=allocation_id, cluster=cluster, value=value, key=key,
        job_uuid=job.uuid, now=now,
    )  # fmt: skip
    _saved(job, event)
    event.job = job
    return True


def job_submit(
    *,
    user: User,
    project: Project,
    cluster: Cluster,
    draft: JobDraft,
    idempotency_key: str = "",
    access: SubmitAccess | None = None,
) -> Job:
    """Validate the draft against the cluster, hold the estimate, create the job (pending) and
    forward it after commit. The same user + idempotency key returns the first job. `access`:
    what the access check decides on, when the caller read it with the project and cluster
    (jobs.selectors.resolve_submit_target); else it is read here.

    The common case (a paid job, no idempotency key, PostgreSQL) writes the hold, the job and
    its event in one statement; the rest in one transaction (_store_job)."""
    idempotency_key = (idempotency_key or "").strip()
    if len(idempotency_key) > 200:
        raise InvalidJob("Idempotency-Key must be at most 200 characters", field="idempotency_key")
    if idempotency_key and (
        first := Job.objects.filter(user=user, idempotency_key=idempotency_key).first()
    ):
        return first
    account = check_submit_access(user=user, project=project, cluster=cluster, access=access)
    request = validate_job(project=project, cluster=cluster, draft=draft)
    _check_with_backend(request, cluster_user=account.username)
    cost = _estimate(request, rates=cached_rates_at(cluster=cluster))
    job = _new_job(
        request,
        job_uuid=uuid.uuid4(),
        user=user,
        account=account,
        cost=cost,
        hold=None,
        idempotency_key=idempotency_key,
    )
    event = JobEvent(job=job, from_state="", to_state=Job.State.PENDING, message=_submitted(ZERO))
    at_once = cost.total > 0 and not idempotency_key and connection.vendor == "postgresql"
    if not (
        at_once
        and _insert_held_job_and_event(
            job, event, user=user, project=project, cluster=cluster, amount=cost.total
        )
    ):
        stored = _store_job(job, event, user=user, project=project, cluster=cluster)
        if stored is not job:
            return stored  # the first job of this idempotency key
    # The 201 answer is built from these, without re-reading the job's events.
    job.submit_events = [event]
    cluster_id = cluster.pk
    transaction.on_commit(lambda: queue.forward_cluster(cluster_id))
    return job


@transaction.atomic
def _store_job(job: Job, event: JobEvent, *, user: User, project: Project, cluster: Cluster) -> Job:
    """Hold the job's estimate (ledger_hold: a refusal explained) and store the job and its
    event, in one transaction. A concurrent request with the same idempotency key that won the
    race answers instead: its job is returned, and our hold rolls back."""
    if job.estimated_cost > 0:
        # The hold first, so the job is stored with it in one INSERT.
        job.hold = ledger_hold(
            actor=user,
            project=project,
            cluster=cluster,
            amount=job.estimated_cost,
            key=f"job:{job.uuid}",
            job_uuid=job.uuid,
            memo=f"Job {job.name}",
        )
        event.message = _submitted(job.hold.amount)
    if not job.idempotency_key:
        _insert_job_and_event(job, event)
        return job
    try:
        with transaction.atomic():
            _insert_job_and_event(job, event)
    except IntegrityError:
        first = Job.objects.filter(user=user, idempotency_key=job.idempotency_key).first()
        if first is None:
            raise
        transaction.set_rollback(True)
        return first
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
    drafts: Sequence[JobDraft],
    idempotency_key: str = "",
    access: SubmitAccess | None = None,
) -> list[Job]:
    """Submit up to BATCH_MAX jobs at once, all or nothing: each is checked as job_submit
    checks it (a 400 names `jobs[i].<field>`), jobs and events are inserted in bulk, each job
    gets its own hold (key "job:<uuid>", so settlement stays per job; any hold that does not
    fit -> 402 for the whole batch with its shortfall, nothing held, no job kept), and the jobs
    are forwarded after commit by the same debounced per-cluster task as job_submit.

    Idempotency: job i of a batch stores "batch:<key>:<i>" as its idempotency key, so the same
    user + key returns the first batch's jobs in order. Two concurrent batches with one key
    race on the (user, idempotency_key) unique constraint: the loser rolls back and answers
    with the winner's jobs. New jobs carry `submit_events`; replayed ones do not. `access`: as
    for job_submit."""
    idempotency_key = (idempotency_key or "").strip()
    if len(idempotency_key) > BATCH_KEY_MAX:
        raise InvalidJob(
            f"Idempotency-Key must be at most {BATCH_KEY_MAX} characters for a batch",
            field="idempotency_key",
        )
    if idempotency_key and (first := _batch_replay(user, idempotency_key)):
        return first
    if not drafts:
        raise InvalidJob("A batch needs at least one job", field="jobs")
    if len(drafts) > BATCH_MAX:
        raise InvalidJob(f"A batch holds at most {BATCH_MAX} jobs", field="jobs")
    account = check_submit_access(user=user, project=project, cluster=cluster, access=access)
    requests = _check_batch(drafts, project=project, cluster=cluster, account=account)
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
            message=_submitted(job.estimated_cost),
        )
        for job in new_jobs
    )
    for job, event in zip(new_jobs, events, strict=True):
        job.submit_events = [event]
    _hold_batch(new_jobs, user=user, project=project, cluster=cluster)
    cluster_id = cluster.pk
    # A batch is already many jobs in one commit: its task need not wait for more to join.
    transaction.on_commit(lambda: queue.forward_cluster(cluster_id, coalesce=False))
    return new_jobs


def _submitted(held: Decimal) -> str:
    """The first event of a new job."""
    return f"Submitted; {held} SU held" if held > 0 else "Submitted; nothing to hold (free cluster)"


def _check_batch(
    drafts: Sequence[JobDraft], *, project: Project, cluster: Cluster, account: ClusterAccount
) -> list[tuple[JobRequest, Cost]]:
    """Each draft checked as job_submit checks it (a 400 names `jobs[i].<field>`), with its
    estimate at the cluster's rates."""
    rates = cached_rates_at(cluster=cluster)
    requests: list[tuple[JobRequest, Cost]] = []
    for i, draft in enumerate(drafts):
        try:
            request = validate_job(project=project, cluster=cluster, draft=draft)
            _check_with_backend(request, cluster_user=account.username)
        except InvalidJob as exc:
            field = f"jobs[{i}].{exc.field}" if exc.field else f"jobs[{i}]"
            raise InvalidJob(exc.detail, field=field, **exc.extra) from exc
        requests.append((request, _estimate(request, rates=rates)))
    return requests


def _hold_batch(jobs: list[Job], *, user: User, project: Project, cluster: Cluster) -> None:
    """Each job's own hold of its estimate, placed together and linked in one UPDATE; any that
    does not fit -> InsufficientQuota for the whole batch with its shortfall, nothing held."""
    paid = [i for i, job in enumerate(jobs) if job.estimated_cost > 0]
    try:
        placed = ledger_hold_many(
            actor=user,
            project=project,
            cluster=cluster,
            holds=[
                (jobs[i].estimated_cost, f"job:{jobs[i].uuid}", jobs[i].uuid, f"Job {jobs[i].name}")
                for i in paid
            ],
        )
    except InsufficientQuotaForBatch as exc:
        # Nothing of the batch was held (and its jobs roll back with this exception). What
        # could have been: what the jobs before the first misfit took, plus the best one
        # allocation still had for that job.
        total = sum((job.estimated_cost for job in jobs), ZERO)
        raise InsufficientQuota(
            f"Insufficient quota: this batch of {len(jobs)} jobs needs {total} SU "
            f"but project '{project.name}' could hold only {exc.available} SU "
            f"on cluster '{cluster.name}' (job {paid[exc.index]} did not fit; "
            f"short by {total - exc.available} SU)",
            required=total,
            available=exc.available,
        ) from exc
    for i, hold in zip(paid, placed, strict=True):
        jobs[i].hold = hold
    bulk_set(
        Job, ("hold_id",), [(jobs[i].pk, hold.pk) for i, hold in zip(paid, placed, strict=True)]
    )
