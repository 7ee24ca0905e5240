"""The contract every compute backend implements (Slurm, Kubernetes, local, simulated).

Plain frozen dataclasses cross the boundary; ORM objects never do. A backend raises
BackendError for permanent failures (the job is rejected) and BackendUnavailable for
transient ones (the caller retries later).
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, BinaryIO, NamedTuple


class BackendError(Exception):
    """A permanent failure: the request will never succeed as it is."""


class BackendUnavailable(Exception):
    """A transient failure (cluster or API down): retry later."""


class AccountUnknown(BackendError):
    """The cluster refused the job's account, or the user's association with it. Permanent in
    itself; the forwarder waits instead while the portal has just made that account or user and
    the cluster may not have learnt it yet (services.scheduler_accounts.account_settling)."""


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to start one portal job."""

    uuid: uuid.UUID
    name: str
    project: str  # "<organization slug>.<project slug>": unique across organizations
    cluster_user: str  # the cluster account the job runs as
    script: str = ""
    image: str = ""
    command: Sequence[str] = ()
    partition: str = ""
    gpus: int = 0
    gpu_type: str = ""
    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60
    array: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    # The project's scheduler account (SchedulerAccount.name) on clusters that manage them;
    # empty: the cluster's default. Never another project's account.
    account: str = ""
    # An interactive session's app port (0: the app picks one), set by the portal from the job's
    # kind, never from its env; None for a batch job.
    session_port: int | None = None


class JobRef(NamedTuple):
    """Identifies a job already handed to a backend. A tuple, not a frozen dataclass: a sync
    tick builds one per active job (200,000 at facility scale), and a frozen dataclass costs
    five object.__setattr__ calls each."""

    uuid: uuid.UUID
    backend_id: str
    cluster_user: str
    project: str = ""  # as JobSpec.project; empty in poll()
    tasks: int = 1  # array tasks the job asked for (1 for a plain job)


# JobStatus.state for a job the backend cannot check right now (e.g. Slurm's accounting is
# down and slurmctld has already forgotten the job): the sync leaves such a job as it is and
# does not count it as missing, so an outage never ends jobs as lost.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class JobStatus:
    """What the backend says about one job. `state` is a portal state name (Job.State values),
    or UNKNOWN when the backend cannot tell now."""

    backend_id: str
    state: str
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class UsageRecord:
    """Accounting for one finished job: what was allocated and for how long."""

    backend_id: str
    elapsed_seconds: int
    gpus: int
    gpu_type: str
    cpus: int
    memory_mb: int
    tasks: int = 1
    started_at: datetime | None = None
    ended_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    next_offset: int
    eof: bool


@dataclass(frozen=True)
class ResultFile:
    path: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class DirectRecord:
    """A finished job the scheduler ran under a project's account without a portal uuid
    (sbatch on a login node, kubectl): the portal records it as a direct job and charges it."""

    backend_id: str
    account: str  # the project's scheduler account: Slurm account or Kubernetes namespace
    cluster_user: str
    name: str
    state: str  # a final portal state name (Job.State values)
    usage: UsageRecord
    exit_code: int | None = None
    submitted_at: datetime | None = None
    # The portal uuid the job is tagged with (Slurm comment gpuc:<uuid>, a Kubernetes label),
    # if any, and the backend id a portal job with that tag carries (an array task's array id;
    # empty = backend_id). Anyone can write a tag, so the backend passes tagged jobs on and the
    # portal skips only those that are its own jobs on this cluster.
    portal_uuid: str = ""
    portal_backend_id: str = ""
    reason: str = ""  # why it ended as it did (the scheduler's words), if worth showing


@dataclass(frozen=True)
class AccountSpec:
    """What the portal wants one project's scheduler account on a cluster to be."""

    name: str  # the Slurm account or Kubernetes namespace (SchedulerAccount.name)
    project: str  # as JobSpec.project
    users: tuple[str, ...] = ()  # cluster users associated with it (Slurm associations)
    # SU the account may consume in all (since it was made: charged + held + available on
    # this cluster); None = no limit; 0 = no new work at all (suspended, exhausted, closed).
    limit_su: Decimal | None = None
    gpu_cap: int | None = None  # concurrent GPUs; None = no cap
    closed: bool = False  # archived project: block and (where safe) remove
    # No SU available for new work on this cluster (suspended, exhausted, expired or closed):
    # computed once, by scheduler_accounts.accounts_wanted. Backends that cannot count SU
    # (Kubernetes) block new work on it; Slurm's limit_su says the same in its own terms.
    blocked: bool = False


@dataclass(frozen=True)
class AccountState:
    """What the scheduler holds for one account, as comparable to AccountSpec."""

    name: str
    users: tuple[str, ...]
    limits: Mapping[str, Any]  # backend-specific, e.g. {"GrpTRESMins": "billing=1200"}


class ComputeBackend(abc.ABC):
    """One cluster's scheduler. Instances are cached per cluster configuration."""

    def __init__(self, *, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = dict(options)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with a cluster's options, as sentences (empty when valid)."""
        return []

    def check_cluster(self) -> list[str]:
        """Problems only the running cluster can show (e.g. no API version in common), as
        sentences; empty when there are none or the cluster cannot be reached. At most one
        short call; run by the system check for valid options."""
        return []

    def validate_spec(self, spec: JobSpec) -> list[tuple[str, str]]:
        """(field, message) for everything in `spec` this cluster would refuse. Called by
        job_submit/job_estimate before anything is held: no network calls here."""
        return []

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Start the job and return its backend id. Tags the job with spec.uuid."""

    @abc.abstractmethod
    def find(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Backend ids of jobs already carrying these portal uuids (one call for all)."""

    @abc.abstractmethod
    def cancel(self, ref: JobRef) -> None:
        """Ask the scheduler to stop the job; cancelling a finished job is not an error."""

    @abc.abstractmethod
    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        """Status of many jobs in one batched call, keyed by backend id. A job the cluster does
        not know is absent (the sync ends it once it has been absent for the grace period); one
        the backend cannot check now has state UNKNOWN."""

    @abc.abstractmethod
    def read_log(self, ref: JobRef, stream: str, offset: int, limit: int) -> LogChunk:
        """Up to `limit` bytes of stdout/stderr from byte `offset` (negative: from the end).

        An offset past the end returns empty data with next_offset = the log's size (the
        caller turns that into a clear 400); never loads the whole log into memory."""

    @abc.abstractmethod
    def list_results(self, ref: JobRef) -> list[ResultFile]:
        """Files the job wrote under its output directory, paths relative to it."""

    @abc.abstractmethod
    def open_result(self, ref: JobRef, path: str) -> BinaryIO:
        """Open one result file for streaming; refuses paths escaping the job directory.

        Raises FileNotFoundError for a missing file, BackendError for a refused path."""

    def read_session_file(self, ref: JobRef) -> bytes:
        """The session.json an interactive session's wrapper wrote in the job's directory
        (where its app listens, and its secret); FileNotFoundError until it is written."""
        raise BackendError(f"{type(self).__name__} does not run interactive sessions")

    @abc.abstractmethod
    def usage(self, refs: Sequence[JobRef]) -> dict[str, UsageRecord]:
        """Accounting records of finished jobs, keyed by backend id (one call for all)."""

    # --- project storage (optional) --------------------------------------------------------
    # A backend whose jobs share a filesystem with the portal keeps one folder per project,
    # <root>/projects/<project>/ (project as JobSpec.project), seen by jobs as
    # $GPUC_PROJECT_DIR. The default: no project storage on this cluster.

    def project_storage_root(self) -> str | None:
        """Where the portal host reaches the folder holding every project's folder (it writes
        there through jobs.storage, confined); None when the cluster has no project storage."""
        return None

    def project_dir(self, project: str) -> str | None:
        """The project's folder as the cluster's jobs see it ($GPUC_PROJECT_DIR), or None."""
        return None

    # --- project accounts and work outside the portal (optional) --------------------------
    # A backend that cannot manage accounts or see work outside the portal keeps these
    # defaults: push_accounts refuses, direct_jobs finds nothing.

    manages_accounts = False
    # Whether an account has user associations (Slurm) or not (a Kubernetes namespace): the
    # wanted users of an account (AccountSpec.users) are empty on a backend without them.
    account_users = False

    def account_name(self, project: str, project_id: int) -> str | None:
        """The scheduler account of a project (`project` as JobSpec.project, `project_id` its
        primary key) on this cluster, by this backend's one rule; None when the backend has no
        project accounts. The only caller is jobs.services.account_names.account_name."""
        return None

    def account_limits(self, spec: AccountSpec) -> Mapping[str, Any]:
        """The limits push_accounts gives `spec`, written as read_accounts reports them
        (AccountState.limits), so that wanted and held compare (drift)."""
        return {}

    def push_accounts(self, specs: Sequence[AccountSpec]) -> dict[str, str]:
        """Create or update these accounts, their user associations and limits in a constant
        number of batched calls; returns {account name: the scheduler's refusal} for those
        it refused (the others were applied)."""
        raise BackendError(f"Cluster {self.name} does not manage project accounts")

    def read_accounts(self, names: Collection[str]) -> dict[str, AccountState]:
        """What the scheduler holds for these accounts (one call); absent = not there."""
        raise BackendError(f"Cluster {self.name} does not manage project accounts")

    def direct_jobs(
        self, accounts: Collection[str], since: datetime
    ) -> tuple[list[DirectRecord], datetime]:
        """Finished jobs under these accounts that ended at or after `since` (one accounting
        query), tagged jobs included (the portal skips its own: see DirectRecord.portal_uuid),
        and the watermark to pass next time (overlapping enough for late accounting records:
        the portal records each job once whatever the overlap)."""
        return [], since
