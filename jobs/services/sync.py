"""Sync and finalisation: one batched poll per cluster records the state changes,
recovers jobs a dead forwarder left submitting, ends the jobs the cluster has stopped
reporting for the grace period, and finalises finished jobs (usage, cost at the rates in
force when they started, hold settled) exactly once by claiming finalized_at. No
scheduler call happens inside a database transaction."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Project
from jobs.backends import get_backend
from jobs.backends.base import (
    UNKNOWN,
    BackendError,
    BackendUnavailable,
    ComputeBackend,
    JobRef,
    JobStatus,
    UsageRecord,
)
from jobs.models import Job, JobEvent
from jobs.services.account_names import qualified_project
from jobs.services.direct import cluster_direct_sync
from quotas.models import ZERO, Cluster
from quotas.services import RateTable, SettledHold, Usage, cost_of, ledger_settle_many
from quotas.services.batch import bulk_insert, bulk_set

logger = logging.getLogger(__name__)

FINALIZE_BATCH = 1000
EVENT_FIELDS = ("job_id", "from_state", "to_state", "message")  # created_at: the batch's


class _Ended(NamedTuple):
    """A finished (or lost) job as finalisation reads it: plain values, no model instance."""

    pk: int
    uuid: uuid.UUID
    backend_id: str
    cluster_username: str
    project_id: int
    state: str
    hold_id: int | None
    started_at: datetime | None
    ended_at: datetime | None
    gpus: int
    gpu_type: str
    cpus: int
    memory_mb: int
    array_size: int


# --- sync and finalisation ------------------------------------------------------------


@dataclass
class SyncResult:
    """What one sync of one cluster did; backend_calls counts calls into the backend."""

    cluster: str
    polled: int = 0
    transitions: int = 0
    finalized: int = 0
    missing: int = 0  # queued/running jobs this poll did not report (the lost ones included)
    lost: int = 0  # of those, ended now: missing for longer than JOBS_MISSING_GRACE_SECONDS
    direct: int = 0  # jobs submitted outside the portal found (and charged) in this tick
    backend_calls: int = 0


# Which backend-reported states may follow a portal state (anything active may end).
_ALLOWED: dict[str, frozenset[str]] = {
    Job.State.QUEUED: frozenset({Job.State.RUNNING, *Job.FINAL_STATES}),
    Job.State.RUNNING: frozenset({Job.State.QUEUED, *Job.FINAL_STATES}),
}


def cluster_sync(*, cluster: Cluster) -> SyncResult:
    """Bring every active job of the cluster up to date with ONE batched poll, record the
    transitions, end the jobs the cluster has stopped reporting for the grace period, then
    finalise finished jobs (one usage call) exactly once: a job this poll saw end gets its
    final state and its charge in one write."""
    result = SyncResult(cluster=cluster.name)
    backend = get_backend(cluster)
    ending: list[tuple[int, str, JobStatus]] = []

    active = list(
        Job.objects.filter(
            cluster=cluster, state__in=(Job.State.QUEUED, Job.State.RUNNING)
        ).values_list("pk", "uuid", "backend_id", "cluster_username", "state", "missing_since")
    )
    if active:
        refs = [JobRef(u, b, cu) for _, u, b, cu, _, _ in active if b]
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
                (ending if status.state in Job.FINAL_STATES else changes).append(
                    (pk, state, status)
                )
        _record_missing(newly_missing, reported_again, now)
        result.transitions = _apply_transitions(changes)
        result.lost = _end_lost(cluster, lost, cutoff=cutoff)
    result.finalized = _finalize_finished(cluster, backend, result, ending=ending)
    _sync_direct(cluster, backend, result)
    return result


def _sync_direct(cluster: Cluster, backend: ComputeBackend, result: SyncResult) -> None:
    """Record and charge the work submitted outside the portal (one more backend call, only
    when the cluster has project accounts); an outage of it never fails the sync."""
    try:
        direct = cluster_direct_sync(cluster=cluster, backend=backend)
    except BackendUnavailable as exc:
        result.backend_calls += 1
        logger.warning("Direct work on %s not searched now: %s", cluster.name, exc)
        return
    except BackendError:
        # A refused query is a bug or a misconfiguration: say so loudly, every tick, but let
        # the portal's own jobs (synced above) go on; the watermark waits.
        result.backend_calls += 1
        logger.exception("Direct work on %s could not be searched", cluster.name)
        return
    result.direct = direct.recorded
    result.backend_calls += direct.backend_calls


MISSING_BATCH = 5000


def _record_missing(missing: Sequence[int], reported_again: Sequence[int], now: datetime) -> None:
    """Note since when the cluster stopped reporting jobs, and forget it for those it reports
    again: one UPDATE each (per MISSING_BATCH jobs), never one per job."""
    for batch in _chunks(missing, MISSING_BATCH):
        Job.objects.filter(
            pk__any=batch,
            state__in=(Job.State.QUEUED, Job.State.RUNNING),
            missing_since__isnull=True,
        ).update(missing_since=now, updated_at=now)
    for batch in _chunks(reported_again, MISSING_BATCH):
        Job.objects.filter(pk__any=batch, missing_since__isnull=False).update(
            missing_since=None, updated_at=now
        )


def _end_lost(cluster: Cluster, ids: Sequence[int], *, cutoff: datetime) -> int:
    """End the jobs the cluster has not reported since before `cutoff`; returns how many."""
    if not ids:
        return 0
    book = RateTable.load(cluster=cluster)
    ended = 0
    for batch in _chunks(ids, FINALIZE_BATCH):
        ended += _end_lost_batch(cluster, batch, cutoff, book)
    return ended


@transaction.atomic
def _end_lost_batch(cluster: Cluster, ids: Sequence[int], cutoff: datetime, book: RateTable) -> int:
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
    rows = (
        Job.objects.select_for_update()
        .filter(
            pk__any=ids,
            state__in=(Job.State.QUEUED, Job.State.RUNNING),
            finalized_at__isnull=True,
            missing_since__lte=cutoff,
        )
        .order_by("pk")
        .values_list(*_Ended._fields, "missing_since")
    )
    charges: list[tuple[_Ended, Usage, dict[str, Any], Decimal]] = []
    for *values, missing_since in rows:
        # What the portal itself observed (no accounting record: the cluster lost the job):
        # started_at to missing_since (never None: claimed missing_since <= cutoff), nothing
        # if it never started.
        job = _Ended._make(values)._replace(ended_at=missing_since or cutoff)
        charges.append((job, *_charge_for(cluster, job, None, book, now)))
    if not charges:
        return 0
    updates: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    charge_events: list[tuple[Any, ...]] = []
    for job, usage, usage_json, message, charged in _settle(
        charges, memo=f"Job usage on {cluster.name} (the cluster lost the job)"
    ):
        since = job.ended_at or cutoff
        reason = (
            "The cluster no longer reports this job "
            f"(missing since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)"
        )
        updates.append((job.pk, reason, since, usage.seconds, usage_json, charged))
        events.append((job.pk, job.state, Job.State.FAILED, reason))
        charge_events.append((job.pk, Job.State.FAILED, Job.State.FAILED, message))
    bulk_set(
        Job,
        ("state_reason", "ended_at", "elapsed_seconds", "usage", "charged_cost"),
        updates,
        constants={"state": Job.State.FAILED, "finalized_at": now, "updated_at": now},
    )
    # The transition first, then the charge, as for a job that ended on its own.
    bulk_insert(JobEvent, EVENT_FIELDS, events + charge_events, constants={"created_at": now})
    return len(updates)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _claim(ids: Sequence[int], *fields: str) -> dict[int, tuple[Any, ...]]:
    """Lock these jobs until commit (in pk order, like every batch writer) and read `fields` of
    those not finalised yet, as their latest committed version has them.

    Finalised rows are skipped here, not in the WHERE clause: the statement stays a primary
    key lookup whatever the planner believes about the partial index of unfinalised jobs (on
    stale statistics it scanned that whole index for every batch)."""
    rows = (
        Job.objects.select_for_update()
        .filter(pk__any=ids)
        .order_by("pk")
        .values_list("pk", "finalized_at", *fields)
    )
    return {pk: tuple(rest) for pk, finalized_at, *rest in rows if finalized_at is None}


def _apply_transitions(changes: list[tuple[int, str, JobStatus]]) -> int:
    """Write the state changes seen in one poll, skipping rows another sync moved already."""
    applied = 0
    for batch in _chunks(changes, 2000):
        now = timezone.now()
        with transaction.atomic():
            current = _claim([pk for pk, _, _ in batch], "state", "started_at")
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
                    )
                )
                events.append((pk, state, status.state, _transition_message(status)))
            bulk_set(
                Job,
                ("state", "state_reason", "started_at", "ended_at", "exit_code"),
                updates,
                constants={"updated_at": now},
            )
            bulk_insert(JobEvent, EVENT_FIELDS, events, constants={"created_at": now})
            applied += len(updates)
    return applied


def _transition_message(status: JobStatus) -> str:
    parts = []
    if status.exit_code is not None and status.state in Job.FINAL_STATES:
        parts.append(f"exit code {status.exit_code}")
    if status.reason:
        parts.append(status.reason)
    return "; ".join(parts)[:1000]


def _usage_for(job: _Ended, record: UsageRecord | None) -> tuple[Usage, dict[str, Any]]:
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
    cluster: Cluster, job: _Ended, record: UsageRecord | None, book: RateTable, now: datetime
) -> tuple[Usage, dict[str, Any], Decimal]:
    """A finished job's usage (accounting record, else its own started_at..ended_at) and its
    cost at the rates in force when it started."""
    usage, usage_json = _usage_for(job, record)
    at = job.started_at or (record.started_at if record else None) or now
    actual = cost_of(cluster=cluster, usage=usage, rates=book.at(at)).total
    usage_json["cost"] = str(actual)
    return usage, usage_json, actual


def _settle(
    charges: Sequence[tuple[_Ended, Usage, dict[str, Any], Decimal]], *, memo: str
) -> list[tuple[_Ended, Usage, dict[str, Any], str, Decimal]]:
    """Settle every job's hold for its actual cost in one ledger_settle_many; per job: its
    usage, usage record, the charge event's message and what was charged."""
    settled = ledger_settle_many(
        actor=None,
        settlements=[(job.hold_id, actual) for job, _, _, actual in charges if job.hold_id],
        memo=memo,
    )
    out = []
    for job, usage, usage_json, actual in charges:
        hold = settled[job.hold_id] if job.hold_id else None
        charged = hold.charged if hold is not None else ZERO
        out.append((job, usage, usage_json, _charge_message(usage, actual, hold), charged))
    return out


def _charge_message(usage: Usage, actual: Decimal, hold: SettledHold | None) -> str:
    if hold is None:
        return f"Charged {actual} SU for {usage.seconds} s"
    return f"Charged {hold.charged} SU for {usage.seconds} s; released {hold.released}"


def _finalize_finished(
    cluster: Cluster,
    backend: ComputeBackend,
    result: SyncResult,
    *,
    ending: Sequence[tuple[int, str, JobStatus]] = (),
) -> int:
    """Charge every finished, unfinalised job of the cluster and the jobs this poll saw end
    (`ending`: pk, state before, status): one usage call, then claim each job and settle its
    hold in the same transaction, an ending job's transition written by the same UPDATE. If
    usage is unavailable, the ending jobs' transitions are written alone and the charges wait
    for a later sync."""
    ends = {pk: (state, status) for pk, state, status in ending}
    finished = [
        job
        for job in map(
            _Ended._make,
            Job.objects.filter(
                cluster=cluster, finalized_at__isnull=True, state__in=Job.FINAL_STATES
            ).values_list(*_Ended._fields),
        )
        if job.pk not in ends  # moved by a concurrent sync meanwhile: its claim says so
    ]
    for chunk in _chunks(list(ends), MISSING_BATCH):
        finished += map(
            _Ended._make, Job.objects.filter(pk__any=chunk).values_list(*_Ended._fields)
        )
    if not finished:
        return 0
    refs = _usage_refs([job for job in finished if job.backend_id])
    records: Mapping[str, UsageRecord] = {}
    if refs:
        result.backend_calls += 1
        try:
            records = backend.usage(refs)
        except BackendUnavailable:
            logger.warning("Usage of cluster %s unavailable; finalising later", cluster.name)
            result.transitions += _apply_transitions(list(ending))
            return 0
    book = RateTable.load(cluster=cluster)
    finalized = 0
    for batch in _chunks(finished, FINALIZE_BATCH):
        done, ended = _finalize_batch(cluster, batch, records, book, ends)
        finalized += done
        result.transitions += ended
    return finalized


def _usage_refs(jobs: Sequence[_Ended]) -> list[JobRef]:
    """What backend.usage() needs of each job, as job_ref() gives it for a Job instance."""
    projects = {
        project.pk: qualified_project(project)
        for project in Project.objects.filter(
            pk__in={job.project_id for job in jobs}
        ).select_related("organization")
    }
    return [
        JobRef(
            uuid=job.uuid,
            backend_id=job.backend_id,
            cluster_user=job.cluster_username,
            project=projects[job.project_id],
            tasks=job.array_size,
        )
        for job in jobs
    ]


FINAL_FIELDS = ("elapsed_seconds", "usage", "charged_cost")  # + finalized_at, updated_at
ENDING_FIELDS = ("state", "state_reason", "started_at", "ended_at", "exit_code", *FINAL_FIELDS)


@transaction.atomic
def _finalize_batch(
    cluster: Cluster,
    batch: Sequence[_Ended],
    records: Mapping[str, UsageRecord],
    book: RateTable,
    ends: Mapping[int, tuple[str, JobStatus]],
) -> tuple[int, int]:
    """Finalise one batch in one transaction; returns (jobs finalised, transitions written).
    A job in `ends` is written only if it is still in the state the poll saw it in (else a
    concurrent sync or a cancel moved it meanwhile), like any transition."""
    now = timezone.now()
    current = _claim([job.pk for job in batch], "state", "started_at")
    charges: list[tuple[_Ended, Usage, dict[str, Any], Decimal]] = []
    for job in batch:
        if job.pk not in current:
            continue  # finalised by a concurrent sync meanwhile
        if end := ends.get(job.pk):
            state, started_at = current[job.pk]
            before, status = end
            if state != before:
                continue
            job = job._replace(
                state=status.state,
                started_at=status.started_at or started_at,
                ended_at=status.ended_at or now,
            )
        record = records.get(job.backend_id) if job.backend_id else None
        charges.append((job, *_charge_for(cluster, job, record, book, now)))
    finals: list[tuple[Any, ...]] = []
    endings: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    charge_events: list[tuple[Any, ...]] = []
    for job, usage, usage_json, message, charged in _settle(
        charges, memo=f"Job usage on {cluster.name}"
    ):
        if end := ends.get(job.pk):
            before, status = end
            endings.append(
                (
                    job.pk,
                    status.state,
                    status.reason[:500],
                    job.started_at,
                    job.ended_at,
                    status.exit_code,
                    usage.seconds,
                    usage_json,
                    charged,
                )
            )
            events.append((job.pk, before, status.state, _transition_message(status)))
        else:
            finals.append((job.pk, usage.seconds, usage_json, charged))
        charge_events.append((job.pk, job.state, job.state, message))
    written = {"finalized_at": now, "updated_at": now}
    bulk_set(Job, FINAL_FIELDS, finals, constants=written)
    bulk_set(Job, ENDING_FIELDS, endings, constants=written)
    # The transitions first, then the charges, as when they were written in two ticks.
    bulk_insert(JobEvent, EVENT_FIELDS, events + charge_events, constants={"created_at": now})
    return len(finals) + len(endings), len(endings)
