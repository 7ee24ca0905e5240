"""The Slurm backend: portal jobs as Slurm batch jobs through slurmrestd (see the package
docstring for the options and the behaviour)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, BinaryIO

from jobs.backends import files
from jobs.backends.base import (
    UNKNOWN,
    AccountSpec,
    AccountState,
    AccountUnknown,
    BackendError,
    BackendUnavailable,
    ComputeBackend,
    DirectRecord,
    JobRef,
    JobSpec,
    JobStatus,
    LogChunk,
    ResultFile,
    UsageRecord,
)
from jobs.backends.slurm import options as option_checks
from jobs.backends.slurm import records, script, versions
from jobs.backends.slurm.accounts import SlurmAccounts
from jobs.backends.slurm.rest import (
    ALREADY_DONE,
    INVALID_ACCOUNT,
    INVALID_JOB_ID,
    PathNotFound,
    SlurmRest,
    SlurmRestError,
)
from jobs.backends.slurm.versions import ApiVersion

logger = logging.getLogger(__name__)

STREAM_FILES = {"stdout": "stdout.log", "stderr": "stderr.log"}
# How many job ids go into one slurmdbd query string (sacct's -j list).
DBD_CHUNK = 500
# A jobs listing is re-fetched with ?update_time (answered 304 when nothing changed) while it
# is younger than this; older, it is fetched whole whatever the clocks say.
SNAPSHOT_MAX_AGE = 30.0
CLOCK_SLACK = 5
# A direct-work query names the accounts when there are at most this many (the query string
# stays short); beyond, it asks for every account and the records are filtered here.
DIRECT_ACCOUNTS_IN_QUERY = 100
# How far each direct-work window reaches back before the last one's end: slurmdbd receives a
# job's end a little after it happens, and the portal's and slurmrestd's clocks may differ.
DIRECT_OVERLAP_SECONDS = 120
# An auto-negotiated version is asked again after this long (an upgrade that keeps the old
# version but adds a newer one is spoken within the hour; one that drops it, at once: a 404).
NEGOTIATION_MAX_AGE = 3600.0
# Query parameters, or a function of the API version spoken that makes them.
Params = Mapping[str, Any] | Callable[[ApiVersion], Mapping[str, Any]] | None


class SlurmBackend(ComputeBackend):
    """Portal jobs as Slurm batch jobs, submitted and followed through slurmrestd."""

    account_users = True  # an association per member with a cluster account

    def __init__(self, *, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name=name, options=options)
        opts = self.options
        self.api_version = str(opts.get("api_version", versions.AUTO))
        self._api: ApiVersion | None = None
        self._api_at = 0.0
        self.rest = SlurmRest(
            cluster=name,
            url=str(opts.get("url", "")),
            jwt_key_file=str(opts.get("jwt_key_file") or ""),
            jwt_key_env=str(opts.get("jwt_key_env") or ""),
            token_lifetime=int(opts.get("jwt_lifetime_seconds", 1800)),
            connect_timeout=float(opts.get("connect_timeout", 5)),
            read_timeout=float(opts.get("read_timeout", 30)),
            pool_size=int(opts.get("pool_size", 16)),
        )
        self.query_user = str(opts.get("query_user", "slurm"))
        self.shared_root = str(opts.get("shared_root", "")).rstrip("/")
        self.shared_mount = str(opts.get("shared_mount") or self.shared_root).rstrip("/")
        self.accounting = bool(opts.get("accounting", True))
        self.manages_accounts = bool(opts.get("manage_accounts", False))
        self.accounts = SlurmAccounts(
            call=self.dbd_call,
            version=lambda: self.api,
            slurm_cluster=str(opts.get("slurm_cluster") or ""),
            operator=str(opts.get("operator_user") or "slurm"),
            parent=str(opts.get("account") or ""),
            gpu_tres=str(opts.get("gpu_tres") or "gpu"),
            billing_per_su=Decimal(str(opts.get("billing_per_su", 1))),
        )
        self._lock = threading.Lock()
        # (fetched at, monotonic fetched at, records) of the last GET /jobs.
        self._snapshot: tuple[float, float, list[records.CtldJob]] | None = None

    # --- configuration ---------------------------------------------------------------------

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with a Slurm cluster's options, as sentences (empty when valid)."""
        return option_checks.check_options(options)

    def check_cluster(self) -> list[str]:
        """The cluster's slurmrestd serves a version the portal speaks (the pinned one, when
        pinned); nothing is said when it cannot be reached (sync reports that)."""
        try:
            versions.choose(self._openapi_paths(), self.api_version)
        except versions.UnsupportedVersion as exc:
            return [str(exc)]
        except (BackendUnavailable, BackendError) as exc:
            logger.info("Cannot check the API versions of cluster %s: %s", self.name, exc)
        return []

    def validate_spec(self, spec: JobSpec) -> list[tuple[str, str]]:
        """(field, message) for everything in `spec` this cluster refuses (no network)."""
        return option_checks.validate_spec(spec, self.options, self.name)

    # --- the API version: the seam every caller of this cluster's slurmrestd goes through ------

    @property
    def api(self) -> ApiVersion:
        """The API version spoken with this cluster: the pinned `api_version`, or (auto) the
        newest both sides speak, negotiated once per backend instance (GET /openapi/v3).
        BackendUnavailable while slurmrestd cannot be asked; UnsupportedVersion (a
        BackendError) when it serves nothing the portal speaks."""
        api = self._api
        if api is None:
            return self.negotiate()
        if self.api_version == versions.AUTO and (
            time.monotonic() - self._api_at > NEGOTIATION_MAX_AGE
        ):
            try:
                return self.negotiate()
            except BackendUnavailable:
                return api  # keep speaking the version that worked until it can be asked
        return api

    def negotiate(self) -> ApiVersion:
        """(Re)read the versions slurmrestd serves and choose one; a pinned version is taken
        as is, without asking."""
        if self.api_version != versions.AUTO:
            api = versions.VERSIONS.get(self.api_version)
            if api is None:
                raise versions.UnsupportedVersion(
                    f"Cluster {self.name}: {versions.check_pinned(self.api_version)}"
                )
        else:
            api = versions.choose(self._openapi_paths())
            logger.info("Cluster %s speaks slurmrestd API %s", self.name, api.version)
        with self._lock:
            self._api, self._api_at = api, time.monotonic()
        return api

    def _openapi_paths(self) -> list[str]:
        """The paths of slurmrestd's OpenAPI description (/openapi/v3; /openapi before 21.08)."""
        try:
            body = self.rest.call("GET", "/openapi/v3", user=self.query_user)
        except PathNotFound:
            body = self.rest.call("GET", "/openapi", user=self.query_user)
        paths = (body or {}).get("paths")
        if not isinstance(paths, dict):
            raise BackendUnavailable(
                f"slurmrestd of {self.name} answered an OpenAPI description without paths"
            )
        return [str(p) for p in paths]

    def ctld_call(
        self,
        method: str,
        path: str,
        *,
        user: str,
        json: Any = None,
        params: Params = None,
        ok_errnos: frozenset[int] = frozenset(),
    ) -> dict[str, Any] | None:
        """rest.call on the slurmctld endpoint `path` ("/jobs") of the version spoken. `json`
        and `params` may be functions of the ApiVersion (shaped per version). A 404 (the cluster
        was upgraded and dropped the version) re-negotiates and retries once."""
        return self._versioned(
            ApiVersion.ctld, method, path, user=user, json=json, params=params, ok=ok_errnos
        )

    def dbd_call(
        self,
        method: str,
        path: str,
        *,
        user: str,
        json: Any = None,
        params: Params = None,
        ok_errnos: frozenset[int] = frozenset(),
        permanent_errnos: frozenset[int] = frozenset(),
    ) -> dict[str, Any] | None:
        """Like ctld_call, on the accounting (slurmdbd) endpoint `path`; BackendUnavailable
        when this slurmrestd serves no accounting. `permanent_errnos` as in SlurmRest.call."""
        return self._versioned(
            ApiVersion.dbd,
            method,
            path,
            user=user,
            json=json,
            params=params,
            ok=ok_errnos,
            permanent=permanent_errnos,
        )

    def _versioned(
        self,
        where: Callable[[ApiVersion, str], str],
        method: str,
        path: str,
        *,
        user: str,
        json: Any,
        params: Params,
        ok: frozenset[int],
        permanent: frozenset[int] = frozenset(),
    ) -> dict[str, Any] | None:
        api = self.api
        for attempt in (1, 2):
            if where is ApiVersion.dbd and not api.accounting:
                raise BackendUnavailable(
                    f"slurmrestd of {self.name} serves no accounting (slurmdbd) API {api.version}"
                )
            body = json(api) if callable(json) else json
            query = params(api) if callable(params) else params
            try:
                return self.rest.call(
                    method,
                    where(api, path),
                    user=user,
                    json=body,
                    params=query,
                    ok_errnos=ok,
                    permanent_errnos=permanent,
                )
            except PathNotFound:
                if attempt == 2 or self.api_version != versions.AUTO:
                    raise
                before, api = api, self.negotiate()
                if api == before:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- paths -----------------------------------------------------------------------------

    def _user(self, user: str) -> str:
        if not user or user in option_checks.FORBIDDEN_USERS:
            raise BackendError(f"Jobs never run as {user or 'an empty user name'!r}")
        if not option_checks.USER_RE.match(user):
            raise BackendError(f"{user!r} is not a valid cluster user name")
        return user

    def workdir(self, user: str, job_uuid: uuid.UUID | str) -> str:
        """The job's working directory as the cluster sees it."""
        return f"{self.shared_root}/{self._user(user)}/jobs/{uuid.UUID(str(job_uuid))}"

    def project_storage_root(self) -> str | None:
        """<shared_mount>/projects: project folders sit next to the users' job directories."""
        return f"{self.shared_mount}/projects" if self.shared_mount else None

    def project_dir(self, project: str) -> str | None:
        return f"{self.shared_root}/projects/{project}" if self.shared_root and project else None

    def _parts(self, ref: JobRef, *rest: str) -> list[str]:
        """Path components below shared_mount of the job's directory (+ rest)."""
        return [self._user(ref.cluster_user), "jobs", str(uuid.UUID(str(ref.uuid))), *rest]

    # --- slurmctld listing -------------------------------------------------------------------

    def _jobs(self) -> list[records.CtldJob]:
        """Every job slurmctld knows (one GET /jobs). With v0.0.38 a recent listing is
        revalidated with ?update_time, which slurmrestd answers 304 when no job changed since."""
        with self._lock:
            snapshot = self._snapshot
        params = None
        now, mono = time.time(), time.monotonic()
        revalidate = self.api.listing_revalidation
        if revalidate and snapshot is not None and mono - snapshot[1] < SNAPSHOT_MAX_AGE:
            params = {"update_time": int(snapshot[0]) - CLOCK_SLACK}
        body = self.ctld_call("GET", "/jobs", user=self.query_user, params=params)
        if body is None and snapshot is not None:
            return snapshot[2]
        jobs = records.ctld_jobs(body)
        with self._lock:
            self._snapshot = (now, mono, jobs)
        return jobs

    def _recent_jobs(self, max_age: float) -> list[records.CtldJob]:
        with self._lock:
            snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[1] <= max_age:
            return snapshot[2]
        return self._jobs()

    def _dbd_jobs(self, backend_ids: Iterable[str]) -> list[records.DbdJob]:
        """Accounting records of these jobs (array tasks included): one query per 500 ids."""
        ids = sorted({b for b in backend_ids if b.isdigit()}, key=int)
        found: list[records.DbdJob] = []
        for i in range(0, len(ids), DBD_CHUNK):

            def query(api: ApiVersion, chunk: list[str] = ids[i : i + DBD_CHUNK]) -> dict[str, Any]:
                return {"step": api.list_param(chunk), "skip_steps": "true"}

            body = self.dbd_call("GET", "/jobs", user=self.query_user, params=query)
            found.extend(records.dbd_jobs(body))
        return found

    # --- the contract ------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> str:
        """POST job/submit as the job's cluster user; the comment gpuc:<uuid> tags it."""
        user = self._user(spec.cluster_user)
        problems = self.validate_spec(spec)
        if problems:
            raise BackendError("; ".join(message for _, message in problems))
        workdir = self.workdir(user, spec.uuid)
        env = script.environment(
            spec,
            workdir,
            home=f"{self.shared_root}/{user}",
            project_dir=self.project_dir(spec.project) or "",
            path=str(self.options.get("path") or script.DEFAULT_PATH),
        )
        batch = script.wrapper(spec, workdir)
        job = script.job_properties(
            spec,
            workdir,
            partition=spec.partition
            or str(self.options.get("partition") or self.options.get("default_partition") or ""),
            # A managed cluster runs each job under its project's account, never the default.
            account=spec.account
            if self.manages_accounts
            else str(self.options.get("account") or ""),
            env=env,
        )
        try:
            answer = self.ctld_call(
                "POST", "/job/submit", user=user, json=lambda api: api.submit_body(batch, job)
            )
        except SlurmRestError as exc:
            # Some refusals still create a job (e.g. a time limit above the partition's MaxTime
            # leaves it pending forever): remove it, the portal job is rejected.
            created = exc.body.get("job_id")
            if isinstance(created, int) and created > 0:
                self._cancel_quietly(str(created), user)
            if INVALID_ACCOUNT in exc.errnos:
                raise AccountUnknown(str(exc)) from exc
            raise
        job_id = (answer or {}).get("job_id")
        if not isinstance(job_id, int) or job_id <= 0:
            raise BackendUnavailable(f"slurmrestd of {self.name} answered no job id: {answer}")
        if message := (answer or {}).get("job_submit_user_msg"):
            logger.info("Slurm job %s of %s: %s", job_id, spec.uuid, message)
        return str(job_id)

    def account_name(self, project: str, project_id: int) -> str:
        """<account_prefix><project id>: deterministic, unique per cluster, a valid Slurm
        account name (the prefix is checked by the options check)."""
        return f"{self.options.get('account_prefix') or 'gpuc'}{project_id}"

    def account_limits(self, spec: AccountSpec) -> dict[str, str]:
        """GrpTRESMins and GrpTRES as read_accounts reports them (see accounts.py)."""
        return self.accounts.limits_for(spec)

    def push_accounts(self, specs: Sequence[AccountSpec]) -> dict[str, str]:
        """Create/update project accounts, associations and limits in slurmdbd (see
        accounts.py); {account: Slurm's refusal} for those it refused."""
        if not self.manages_accounts:
            return super().push_accounts(specs)
        return self.accounts.push(specs)

    def read_accounts(self, names: Collection[str]) -> dict[str, AccountState]:
        """What slurmdbd holds for these accounts (one call)."""
        if not self.manages_accounts:
            return super().read_accounts(names)
        return self.accounts.read(names)

    def _cancel_quietly(self, job_id: str, user: str) -> None:
        try:
            self.ctld_call(
                "DELETE",
                f"/job/{job_id}",
                user=user,
                ok_errnos=frozenset({INVALID_JOB_ID, ALREADY_DONE}),
            )
        except (BackendError, BackendUnavailable):
            logger.exception("Could not cancel refused Slurm job %s", job_id)

    def find(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Slurm jobs carrying these uuids in their comment, from one jobs listing. The record a
        refused submission leaves behind (FAILED, BadConstraints, never allocated) is not one."""
        if not uuids:
            return {}
        wanted = {records.comment_for(u): u for u in uuids}
        found: dict[uuid.UUID, str] = {}
        for job in self._jobs():
            portal_uuid = wanted.get(job.comment)
            if portal_uuid is not None and not records.is_refused_submission(job):
                found.setdefault(portal_uuid, job.key)
        return found

    def cancel(self, ref: JobRef) -> None:
        """DELETE the job (a whole array) as its user; an ended or forgotten job is fine."""
        if not ref.backend_id.isdigit():
            raise BackendError(f"not a Slurm job id: {ref.backend_id!r}")
        self.ctld_call(
            "DELETE",
            f"/job/{ref.backend_id}",
            user=self._user(ref.cluster_user),
            ok_errnos=frozenset({INVALID_JOB_ID, ALREADY_DONE}),
        )

    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        """One jobs listing for all refs; those slurmctld forgot (MinJobAge) come from one
        slurmdbd query. Records whose comment is not the ref's uuid are ignored."""
        if not refs:
            return {}
        by_id = records.group_ctld(self._jobs())
        out: dict[str, JobStatus] = {}
        missing: list[JobRef] = []
        for ref in refs:
            found = by_id.get(ref.backend_id)
            if found and records.belongs_to(found, records.comment_for(ref.uuid)):
                out[ref.backend_id] = records.status_from_ctld(ref.backend_id, found)
            else:
                missing.append(ref)
        if missing and self.accounting:
            try:
                by_dbd = records.group_dbd(self._dbd_jobs(r.backend_id for r in missing))
            except BackendUnavailable as exc:
                # The jobs slurmctld still knows are up to date; the others cannot be checked
                # until accounting is back (UNKNOWN: not missing, so never ended as lost).
                logger.warning("Accounting of %s unavailable: %s", self.name, exc)
                for ref in missing:
                    out[ref.backend_id] = JobStatus(
                        ref.backend_id, UNKNOWN, reason=f"Accounting unavailable: {exc}"
                    )
                return out
            for ref in missing:
                accounted = by_dbd.get(ref.backend_id)
                if accounted and records.belongs_to(accounted, records.comment_for(ref.uuid)):
                    out[ref.backend_id] = records.status_from_dbd(ref.backend_id, accounted)
        return out

    def usage(self, refs: Sequence[JobRef]) -> dict[str, UsageRecord]:
        """Elapsed time and allocated TRES from one slurmdbd query; jobs accounting has no final
        record of yet (or all, while slurmdbd is down) are measured from slurmctld's record (said
        so in raw["source"]); with neither at hand, BackendUnavailable (finalise later)."""
        if not refs:
            return {}
        out: dict[str, UsageRecord] = {}
        accounting_down: BackendUnavailable | None = None
        # slurmdbd records an array's tasks one by one and lags under load: a partial set would
        # undercharge. slurmctld holds every task's record for MinJobAge after the end (sync
        # runs far more often), so arrays are measured from it first, and from slurmdbd only
        # once slurmctld has forgotten them, by which time accounting has caught up.
        self._usage_from_ctld([ref for ref in refs if ref.tasks > 1], out)
        if self.accounting and len(out) < len(refs):
            try:
                by_dbd = records.group_dbd(
                    self._dbd_jobs(r.backend_id for r in refs if r.backend_id not in out)
                )
            except BackendUnavailable as exc:
                accounting_down, by_dbd = exc, {}
            for ref in refs:
                if ref.backend_id in out:
                    continue
                found = by_dbd.get(ref.backend_id)
                if found and records.belongs_to(found, records.comment_for(ref.uuid)):
                    record = records.usage_from_dbd(ref.backend_id, found)
                    if record is not None:
                        out[ref.backend_id] = record
        self._usage_from_ctld([ref for ref in refs if ref.backend_id not in out], out)
        if accounting_down is not None and len(out) < len(refs):
            # Neither record is at hand for some: finalise them later rather than guess.
            raise accounting_down
        return out

    def _usage_from_ctld(self, refs: Sequence[JobRef], out: dict[str, UsageRecord]) -> None:
        """Add to `out` the usage of those `refs` slurmctld still has final records of."""
        if not refs:
            return
        by_id = records.group_ctld(self._recent_jobs(max_age=10.0))
        for ref in refs:
            found = by_id.get(ref.backend_id)
            if found and records.belongs_to(found, records.comment_for(ref.uuid)):
                record = records.usage_from_ctld(ref.backend_id, found)
                if record is not None:
                    out[ref.backend_id] = record

    def direct_jobs(
        self, accounts: Collection[str], since: datetime
    ) -> tuple[list[DirectRecord], datetime]:
        """ONE slurmdbd query for the jobs that ended from `since` on (every final state, the
        accounts named when few), whatever the number of jobs and accounts. The window is
        relative to slurmrestd's own clock ("now-N seconds" .. "now"), so neither time zones
        nor clock skew matter; the next watermark is now minus direct_overlap_seconds."""
        if not accounts or not self.accounting:
            return [], since
        now = datetime.now(tz=UTC)
        overlap = float(self.options.get("direct_overlap_seconds", DIRECT_OVERLAP_SECONDS))
        names = sorted(accounts)

        def query(api: ApiVersion) -> dict[str, Any]:
            params: dict[str, Any] = {
                "start_time": api.time_query(since.timestamp() - 1, now=now.timestamp()),
                # slurmdbd applies the state filter only with an explicit end of the window.
                "end_time": "now",
                "state": api.list_param(records.DIRECT_QUERY_STATES),
                "skip_steps": "true",
            }
            if len(names) <= DIRECT_ACCOUNTS_IN_QUERY:
                params["account"] = api.list_param(names)
            return params

        body = self.dbd_call("GET", "/jobs", user=self.query_user, params=query)
        found = records.direct_from_dbd(records.dbd_jobs(body), frozenset(accounts))
        return found, max(since, now - timedelta(seconds=overlap))

    def read_log(self, ref: JobRef, stream: str, offset: int, limit: int) -> LogChunk:
        """Bytes of <workdir>/stdout.log or stderr.log on the shared filesystem."""
        if stream not in STREAM_FILES:
            raise BackendError(f"unknown stream {stream!r}")
        try:
            return files.read_chunk(
                self.shared_mount, self._parts(ref, STREAM_FILES[stream]), offset, limit
            )
        except (NotADirectoryError, IsADirectoryError):
            return LogChunk(data=b"", next_offset=0, eof=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot read the log of {ref.uuid}: {exc}") from exc

    def list_results(self, ref: JobRef) -> list[ResultFile]:
        """Regular files under <workdir>/output (symlinks are not listed)."""
        try:
            return files.list_files(self.shared_mount, self._parts(ref, "output"))
        except OSError as exc:
            raise BackendUnavailable(f"cannot list the results of {ref.uuid}: {exc}") from exc

    def open_result(self, ref: JobRef, path: str) -> BinaryIO:
        """One file under <workdir>/output; '..', absolute paths and symlinks are refused."""
        parts = files.result_parts(path)
        return files.open_file(self.shared_mount, self._parts(ref, "output", *parts))

    def read_session_file(self, ref: JobRef) -> bytes:
        """<workdir>/session.json on the shared filesystem (outside output/: never a result)."""
        with files.open_file(self.shared_mount, self._parts(ref, "session.json")) as handle:
            return handle.read(4096)
