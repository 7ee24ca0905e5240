"""Work submitted outside the portal (sbatch on a login node, kubectl): each sync tick asks the
backend ONCE for the jobs that ended under the cluster's project accounts since the cluster's
watermark, records each as a Job of origin `direct` with its timeline, and charges it exactly
once from the scheduler's own accounting, with no hold. Backend-agnostic: it takes
DirectRecords, whichever backend made them.

Exactly once, whatever the overlap of the windows, retries or concurrent ticks: recording
happens under a row lock on the cluster's DirectWatermark (ticks of one cluster take turns),
a job already recorded is skipped (the unique (cluster, backend_id) of direct jobs is the last
line of defence), the job and its charge are written in one transaction, and the ledger key
"direct:<cluster id>:<backend id>" makes the charge itself idempotent. The watermark moves
forward only after the jobs found up to it are committed.

The charge: the job's usage at the rates in force when it started (as for the portal's own
jobs), taken from the project's eligible allocations earliest-ending first, never more than
is available (no overspend, ever). What no allocation covers is recorded on the job
(uncovered_cost), in its timeline, in the log, and listed for staff in the Django admin's jobs
(filter "uncovered"): the cluster's limits keep it small, and staff settle it by hand (a
credit and a charge, or a write-off).

A direct job whose cluster user maps to no portal user (no ClusterAccount with that name on the
cluster: an association made by hand, a cluster account removed since) is still recorded and
charged to the project, with no portal user; cluster_username says who ran it.
"""

from __future__ import annotations

import logging
import uuid as uuid_lib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from accounts.models import Project
from jobs.backends import get_backend
from jobs.backends.base import ComputeBackend, DirectRecord
from jobs.models import ClusterAccount, DirectWatermark, Job, JobEvent, SchedulerAccount
from quotas.exceptions import NoRate
from quotas.models import ZERO, Cluster
from quotas.services import Usage, cached_rates_at, cost_of, ledger_charge_direct

logger = logging.getLogger(__name__)

DIRECT_BATCH = 500
# Two records of one id are one job when their submission times differ by less than this.
SAME_SUBMISSION = timedelta(seconds=2)


@dataclass
class DirectResult:
    """What one search for direct work on one cluster did."""

    cluster: str
    found: int = 0  # records the backend returned
    recorded: int = 0  # new direct jobs (each charged once)
    known: int = 0  # already recorded (overlapping windows, retries, a concurrent tick)
    portal: int = 0  # the portal's own jobs (genuine portal tag)
    unmanaged: int = 0  # under an account the portal does not manage
    charged: Decimal = ZERO
    uncovered: Decimal = ZERO
    backend_calls: int = 0
    jobs: list[Job] = field(default_factory=list)


def direct_key(cluster: Cluster, backend_id: str) -> str:
    """The ledger idempotency key of a direct job's charge."""
    return f"direct:{cluster.pk}:{backend_id}"


def cluster_direct_sync(*, cluster: Cluster, backend: ComputeBackend | None = None) -> DirectResult:
    """Find the work that ended under the cluster's project accounts since its watermark (ONE
    backend call, whatever the number of jobs and accounts), record and charge each job
    exactly once, then move the watermark forward. No transaction is open during the call."""
    result = DirectResult(cluster=cluster.name)
    accounts = dict(
        SchedulerAccount.objects.filter(cluster=cluster).values_list("name", "project_id")
    )
    if not accounts:
        return result
    backend = backend or get_backend(cluster)
    since = _watermark(cluster).since
    result.backend_calls += 1
    records, mark = backend.direct_jobs(frozenset(accounts), since)
    result.found = len(records)
    _record(cluster, records, accounts, result)
    # Only forward, and only now that everything found up to `mark` is committed.
    DirectWatermark.objects.filter(cluster=cluster, since__lt=mark).update(
        since=mark, updated_at=timezone.now()
    )
    return result


def direct_jobs_record(*, cluster: Cluster, records: Sequence[DirectRecord]) -> DirectResult:
    """Record and charge these finished jobs found in the cluster's accounting (each exactly
    once: a job already recorded is skipped), in transactions of DIRECT_BATCH jobs."""
    result = DirectResult(cluster=cluster.name, found=len(records))
    accounts = dict(
        SchedulerAccount.objects.filter(
            cluster=cluster, name__in={r.account for r in records}
        ).values_list("name", "project_id")
    )
    _watermark(cluster)
    _record(cluster, records, accounts, result)
    return result


def _watermark(cluster: Cluster) -> DirectWatermark:
    """The cluster's watermark row; a new one starts when its first project account was made
    (no job can have run under an account before it existed)."""
    mark = DirectWatermark.objects.filter(cluster=cluster).first()
    if mark is not None:
        return mark
    first = SchedulerAccount.objects.filter(cluster=cluster).aggregate(first=Min("created_at"))
    since = first["first"] or timezone.now()
    mark, _ = DirectWatermark.objects.get_or_create(cluster=cluster, defaults={"since": since})
    return mark


def _record(
    cluster: Cluster,
    records: Sequence[DirectRecord],
    accounts: Mapping[str, int],
    result: DirectResult,
) -> None:
    for i in range(0, len(records), DIRECT_BATCH):
        _record_batch(cluster, records[i : i + DIRECT_BATCH], accounts, result)


@transaction.atomic
def _record_batch(
    cluster: Cluster,
    batch: Sequence[DirectRecord],
    accounts: Mapping[str, int],
    result: DirectResult,
) -> None:
    # The cluster's turn: a concurrent tick waits here, then sees what this one committed.
    DirectWatermark.objects.select_for_update().filter(cluster=cluster).first()
    managed = [r for r in batch if r.account in accounts]
    result.unmanaged += len(batch) - len(managed)
    own = _portal_jobs(cluster, managed)
    fresh: list[DirectRecord] = []
    for record in managed:
        if record.portal_uuid and _is_portal_job(record, own):
            result.portal += 1
        else:
            fresh.append(record)
    new = _unrecorded(cluster, fresh)
    result.known += len(fresh) - len(new)
    if not new:
        return
    users = dict(
        ClusterAccount.objects.filter(
            cluster=cluster, username__in={r.cluster_user for r, _ in new}
        ).values_list("username", "user_id")
    )
    projects = Project.objects.in_bulk({accounts[r.account] for r, _ in new})
    now = timezone.now()
    jobs: list[Job] = []
    messages: list[tuple[str, str]] = []
    for record, backend_id in new:
        job, found, charged = _direct_job(
            cluster, record, backend_id, projects[accounts[record.account]], users, now
        )
        jobs.append(job)
        messages.append((found, charged))
        result.charged += job.charged_cost or ZERO
        result.uncovered += job.uncovered_cost or ZERO
    created = Job.objects.bulk_create(jobs)
    JobEvent.objects.bulk_create(
        event
        for job, (found, charged) in zip(created, messages, strict=True)
        for event in (
            JobEvent(job=job, created_at=now, from_state="", to_state=job.state, message=found),
            JobEvent(
                job=job, created_at=now, from_state=job.state, to_state=job.state, message=charged
            ),
        )
    )
    result.recorded += len(created)
    result.jobs.extend(created)


def _portal_jobs(cluster: Cluster, records: Iterable[DirectRecord]) -> dict[uuid_lib.UUID, str]:
    """{uuid: backend id} of the portal's own jobs on this cluster among the records' tags."""
    tags = set()
    for record in records:
        try:
            tags.add(uuid_lib.UUID(record.portal_uuid))
        except ValueError:
            continue  # no tag, or one that is no uuid: not the portal's
    if not tags:
        return {}
    return dict(
        Job.objects.filter(cluster=cluster, origin=Job.Origin.PORTAL, uuid__in=tags).values_list(
            "uuid", "backend_id"
        )
    )


def _is_portal_job(record: DirectRecord, own: Mapping[uuid_lib.UUID, str]) -> bool:
    """The tag is genuine: a portal job on this cluster carries it, with this record's id (or
    none yet: a forwarder that died before recording it; the sync recovers it)."""
    try:
        backend_id = own.get(uuid_lib.UUID(record.portal_uuid))
    except ValueError:
        return False
    expected = record.portal_backend_id or record.backend_id
    return backend_id is not None and backend_id in ("", expected)


def _unrecorded(
    cluster: Cluster, records: Sequence[DirectRecord]
) -> list[tuple[DirectRecord, str]]:
    """The records not recorded yet, each with the backend id to record it under: its own, or
    "<id>@<submission epoch>" when a different job (a later submission: ids wrap, accounting
    databases are rebuilt) already holds that id. One query."""
    wanted = {r.backend_id for r in records} | {_alias(r) for r in records if r.submitted_at}
    existing: dict[str, datetime | None] = dict(
        Job.objects.filter(
            cluster=cluster, origin=Job.Origin.DIRECT, backend_id__in=wanted
        ).values_list("backend_id", "submitted_at")
    )
    out: list[tuple[DirectRecord, str]] = []
    seen: set[str] = set()
    for record in records:
        backend_id = record.backend_id
        if backend_id in existing:
            held = existing[backend_id]
            if (
                held is None
                or record.submitted_at is None
                or abs(held - record.submitted_at) < SAME_SUBMISSION
            ):
                continue  # this very job, recorded before
            backend_id = _alias(record)
            if backend_id in existing:
                continue
        if backend_id in seen:
            continue  # listed twice in one answer
        seen.add(backend_id)
        out.append((record, backend_id))
    return out


def _alias(record: DirectRecord) -> str:
    stamp = int(record.submitted_at.timestamp()) if record.submitted_at else 0
    return f"{record.backend_id}@{stamp}"


def _direct_job(
    cluster: Cluster,
    record: DirectRecord,
    backend_id: str,
    project: Project,
    users: Mapping[str, int],
    now: datetime,
) -> tuple[Job, str, str]:
    """The unsaved Job of one record, charged (the ledger writes are made here, in the
    caller's transaction), with the messages of its two timeline events."""
    record_usage = record.usage
    usage = Usage(
        seconds=max(0, int(record_usage.elapsed_seconds)),
        gpus=record_usage.gpus,
        gpu_type=record_usage.gpu_type,
        cpus=record_usage.cpus,
        memory_mb=record_usage.memory_mb,
        tasks=max(0, int(record_usage.tasks)),
    )
    started = record_usage.started_at or record.submitted_at or now
    job_uuid = uuid_lib.uuid4()
    details: dict[str, Any] = {
        "elapsed_seconds": usage.seconds,
        "gpus": usage.gpus,
        "gpu_type": usage.gpu_type,
        "cpus": usage.cpus,
        "memory_mb": usage.memory_mb,
        "tasks": usage.tasks,
        "source": "accounting",
        "account": record.account,
    }
    if source := str(record_usage.raw.get("source", "")):
        details["backend_source"] = source
    try:
        # The rates in force when it started, as for the portal's own jobs.
        cost = cost_of(
            cluster=cluster, usage=usage, rates=cached_rates_at(cluster=cluster, at=started)
        ).total
    except NoRate as exc:
        logger.error("Direct job %s on %s not charged: %s", backend_id, cluster.name, exc)
        charged, uncovered = ZERO, None
        charge_message = f"Not charged: {exc.detail}"
    else:
        charged, uncovered = ZERO, ZERO
        if cost > 0:
            charge = ledger_charge_direct(
                actor=None,
                project=project,
                cluster=cluster,
                amount=cost,
                key=direct_key(cluster, backend_id),
                job_uuid=job_uuid,
                memo=f"Direct job {backend_id} on {cluster.name} (submitted outside the portal)",
            )
            charged, uncovered = charge.charged, charge.uncovered
        details["cost"] = str(cost)
        charge_message = f"Charged {charged} SU for {usage.seconds} s (no hold: direct job)"
        if uncovered:
            details["uncovered"] = str(uncovered)
            charge_message += (
                f"; {uncovered} SU of its {cost} SU cost exceeded what the project's "
                "allocations had available and is recorded as uncovered for staff"
            )
            logger.warning(
                "Direct job %s on %s (project %s): %s SU uncovered",
                backend_id,
                cluster.name,
                project.pk,
                uncovered,
            )
    raw = record_usage.raw
    limit = raw.get("time_limit_minutes")
    job = Job(
        uuid=job_uuid,
        project=project,
        user_id=users.get(record.cluster_user),
        cluster=cluster,
        origin=Job.Origin.DIRECT,
        name=(record.name or backend_id)[:128],
        partition=str(raw.get("partition") or "")[:64],
        gpus=usage.gpus,
        gpu_type=usage.gpu_type[:64],
        cpus=usage.cpus,
        memory_mb=usage.memory_mb,
        time_limit_minutes=limit if isinstance(limit, int) and limit >= 0 else 0,
        state=record.state,
        state_reason=record.reason[:500],
        backend_id=backend_id,
        cluster_username=record.cluster_user[:32],
        created_at=record.submitted_at or started,
        submitted_at=record.submitted_at,
        started_at=record_usage.started_at,
        ended_at=record_usage.ended_at,
        finalized_at=now,
        exit_code=record.exit_code,
        elapsed_seconds=usage.seconds,
        usage=details,
        estimated_cost=ZERO,
        charged_cost=charged,
        uncovered_cost=uncovered or None,
    )
    ran = f"run by cluster user {record.cluster_user or '?'} under account {record.account}"
    ended = f"ended {record.state}"
    if record.exit_code is not None:
        ended += f" with exit code {record.exit_code}"
    if record.reason:
        ended += f" ({record.reason})"
    found = (
        f"Found in the cluster's accounting, submitted outside the portal: job {backend_id} "
        f"{ran}; {ended}"
    )[:1000]
    return job, found, charge_message[:1000]
