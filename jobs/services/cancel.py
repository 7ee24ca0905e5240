"""Cancel: a pending job is cancelled at once and its hold released; a queued or
running one is cancelled on the cluster, and the next sync records its end and charges
what it ran."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.models import ProjectMember, User
from accounts.roles import PROJECT_MANAGER_ROLES
from jobs import queue
from jobs.backends import get_backend
from jobs.backends.base import BackendUnavailable
from jobs.exceptions import ClusterUnavailable, JobStateError
from jobs.models import Job, JobEvent
from jobs.services.specs import job_ref
from portal.errors import PermissionDenied
from quotas.models import ZERO, Hold
from quotas.policy import is_facility_admin
from quotas.services import ledger_settle

# --- cancel ----------------------------------------------------------------------------------


def _may_manage(user: User, job: Job) -> bool:
    if job.user_id == user.pk:
        return True
    return ProjectMember.objects.filter(
        project_id=job.project_id,
        user=user,
        role__in=PROJECT_MANAGER_ROLES,
    ).exists()


def job_cancel(*, user: User, job: Job) -> Job:
    """Pending: cancelled now and the hold released. Queued/running: the cluster is asked to
    stop it and the next sync records the end (charged for what it ran). Finished: 409.
    The owner, the project's PI or managers, and facility staff may cancel; the timeline
    records who did."""
    if _may_manage(user, job):
        by = ""
    elif is_facility_admin(user):
        by = " by facility staff"
    else:
        raise PermissionDenied("Only the job's owner or the project's PI or manager may cancel it")
    if job.state == Job.State.PENDING and _cancel_pending(user, job, by):
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
        message=f"Cancellation requested{by}",
        actor=user,
    )
    cluster_id = job.cluster_id
    transaction.on_commit(lambda: queue.sync_cluster(cluster_id, quiet=True))
    return job


@transaction.atomic
def _cancel_pending(user: User, job: Job, by: str) -> bool:
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
        message=f"Cancelled{by} before it reached the cluster; hold released",
        actor=user,
        created_at=now,
    )
    return True
