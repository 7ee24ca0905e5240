"""What a backend sees of a job: plain values, never ORM objects. Submit checks a draft with
the cluster's own rules through backend_spec before anything is held; forwarding starts a
stored job with job_spec and refers to it with job_ref."""

from __future__ import annotations

import uuid

from accounts.models import Project
from jobs.backends.base import JobRef, JobSpec
from jobs.drafts import JobDraft
from jobs.models import Job, Session
from jobs.services.account_names import job_account, qualified_project

# The uuid of a spec that is only checked, never submitted.
UNSUBMITTED = uuid.UUID(int=0)
# What job_spec reads beyond the job's row: select_related(*SPEC_RELATED) saves the queries.
SPEC_RELATED = ("cluster", "project__organization", "session__app")


def backend_spec(
    draft: JobDraft,
    *,
    project: Project,
    job_uuid: uuid.UUID = UNSUBMITTED,
    cluster_user: str = "",
    account: str = "",
    session_port: int | None = None,
) -> JobSpec:
    """The backend's JobSpec of a draft (a checked JobRequest, or JobDraft.of(a stored job))."""
    values = draft.values()
    values["command"] = tuple(values["command"])
    return JobSpec(
        uuid=job_uuid,
        project=qualified_project(project),
        cluster_user=cluster_user,
        account=account,
        session_port=session_port,
        **values,
    )


def job_session_port(job: Job) -> int | None:
    """The port of a session's app (the portal's own mark of a session: the job's kind, never
    its env); None for a batch job."""
    if job.kind != Job.Kind.SESSION:
        return None
    try:
        return job.session.app.port
    except Session.DoesNotExist:
        return None


def job_spec(job: Job) -> JobSpec:
    """What the backend gets to start `job`; on a cluster that manages project accounts it
    runs under its own project's account (job.cluster is always select_related here)."""
    return backend_spec(
        JobDraft.of(job),
        project=job.project,
        job_uuid=job.uuid,
        cluster_user=job.cluster_username,
        account=job_account(job.cluster, job.project),
        session_port=job_session_port(job),
    )


def job_ref(job: Job) -> JobRef:
    return JobRef(
        uuid=job.uuid,
        backend_id=job.backend_id,
        cluster_user=job.cluster_username,
        project=qualified_project(job.project),
        tasks=job.array_size,
    )
