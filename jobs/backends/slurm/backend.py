"""The Slurm backend: portal jobs as Slurm batch jobs through slurmrestd (see the package
docstring for the options and the behaviour)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from jobs.backends.base import (
    UNKNOWN,
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
from jobs.backends.slurm import files, records, script
from jobs.backends.slurm import options as option_checks
from jobs.backends.slurm.rest import ALREADY_DONE, INVALID_JOB_ID, SlurmRest, SlurmRestError

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


class SlurmBackend(ComputeBackend):
    """Portal jobs as Slurm batch jobs, submitted and followed through slurmrestd."""

    def __init__(self, *, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name=name, options=options)
        opts = self.options
        self.api = str(opts.get("api_version", "v0.0.38"))
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
        self._lock = threading.Lock()
        # (fetched at, monotonic fetched at, records) of the last GET /jobs.
        self._snapshot: tuple[float, float, list[dict[str, Any]]] | None = None

    # --- configuration ---------------------------------------------------------------------

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with a Slurm cluster's options, as sentences (empty when valid)."""
        return option_checks.check_options(options)

    def validate_spec(self, spec: JobSpec) -> list[tuple[str, str]]:
        """(field, message) for everything in `spec` this cluster refuses (no network)."""
        return option_checks.validate_spec(spec, self.options, self.name)

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

    def _parts(self, ref: JobRef, *rest: str) -> list[str]:
        """Path components below shared_mount of the job's directory (+ rest)."""
        return [self._user(ref.cluster_user), "jobs", str(uuid.UUID(str(ref.uuid))), *rest]

    # --- slurmctld listing -------------------------------------------------------------------

    def _jobs(self) -> list[dict[str, Any]]:
        """Every job slurmctld knows (one GET /jobs). A recent listing is revalidated with
        ?update_time, which slurmrestd answers 304 when no job changed since."""
        with self._lock:
            snapshot = self._snapshot
        params = None
        now, mono = time.time(), time.monotonic()
        if snapshot is not None and mono - snapshot[1] < SNAPSHOT_MAX_AGE:
            params = {"update_time": int(snapshot[0]) - CLOCK_SLACK}
        body = self.rest.call("GET", f"/slurm/{self.api}/jobs", user=self.query_user, params=params)
        if body is None and snapshot is not None:
            return snapshot[2]
        jobs = [j for j in (body or {}).get("jobs") or () if isinstance(j, dict)]
        with self._lock:
            self._snapshot = (now, mono, jobs)
        return jobs

    def _recent_jobs(self, max_age: float) -> list[dict[str, Any]]:
        with self._lock:
            snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[1] <= max_age:
            return snapshot[2]
        return self._jobs()

    def _dbd_jobs(self, backend_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Accounting records of these jobs (array tasks included): one query per 500 ids."""
        ids = sorted({b for b in backend_ids if b.isdigit()}, key=int)
        found: list[dict[str, Any]] = []
        for i in range(0, len(ids), DBD_CHUNK):
            body = self.rest.call(
                "GET",
                f"/slurmdb/{self.api}/jobs",
                user=self.query_user,
                params={"step": ",".join(ids[i : i + DBD_CHUNK]), "skip_steps": "true"},
            )
            found.extend(j for j in (body or {}).get("jobs") or () if isinstance(j, dict))
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
            path=str(self.options.get("path") or script.DEFAULT_PATH),
        )
        body = {
            "script": script.wrapper(spec, workdir),
            "job": script.job_properties(
                spec,
                workdir,
                partition=spec.partition
                or str(
                    self.options.get("partition") or self.options.get("default_partition") or ""
                ),
                account=str(self.options.get("account") or ""),
                env=env,
            ),
        }
        try:
            answer = self.rest.call("POST", f"/slurm/{self.api}/job/submit", user=user, json=body)
        except SlurmRestError as exc:
            # Some refusals still create a job (e.g. a time limit above the partition's MaxTime
            # leaves it pending forever): remove it, the portal job is rejected.
            created = exc.body.get("job_id")
            if isinstance(created, int) and created > 0:
                self._cancel_quietly(str(created), user)
            raise
        job_id = (answer or {}).get("job_id")
        if not isinstance(job_id, int) or job_id <= 0:
            raise BackendUnavailable(f"slurmrestd of {self.name} answered no job id: {answer}")
        if message := (answer or {}).get("job_submit_user_msg"):
            logger.info("Slurm job %s of %s: %s", job_id, spec.uuid, message)
        return str(job_id)

    def _cancel_quietly(self, job_id: str, user: str) -> None:
        try:
            self.rest.call(
                "DELETE",
                f"/slurm/{self.api}/job/{job_id}",
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
            portal_uuid = wanted.get(str(job.get("comment") or ""))
            if portal_uuid is not None and not records.is_refused_submission(job):
                found.setdefault(portal_uuid, records.array_key(job))
        return found

    def cancel(self, ref: JobRef) -> None:
        """DELETE the job (a whole array) as its user; an ended or forgotten job is fine."""
        if not ref.backend_id.isdigit():
            raise BackendError(f"not a Slurm job id: {ref.backend_id!r}")
        self.rest.call(
            "DELETE",
            f"/slurm/{self.api}/job/{ref.backend_id}",
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
            if found and records.belongs_to(found, records.comment_for(ref.uuid), dbd=False):
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
                found = by_dbd.get(ref.backend_id)
                if found and records.belongs_to(found, records.comment_for(ref.uuid), dbd=True):
                    out[ref.backend_id] = records.status_from_dbd(ref.backend_id, found)
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
                if found and records.belongs_to(found, records.comment_for(ref.uuid), dbd=True):
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
            if found and records.belongs_to(found, records.comment_for(ref.uuid), dbd=False):
                record = records.usage_from_ctld(ref.backend_id, found)
                if record is not None:
                    out[ref.backend_id] = record

    def direct_jobs(
        self, accounts: Collection[str], since: datetime
    ) -> tuple[list[DirectRecord], datetime]:
        """ONE slurmdbd query for the jobs that ended from `since` on (all final states, the
        accounts named when few), whatever the number of jobs and accounts. The window is
        relative to slurmrestd's own clock ("now-N seconds" .. "now"), so no time zone is
        involved; the next watermark is now minus the overlap (direct_overlap_seconds)."""
        if not accounts or not self.accounting:
            return [], since
        now = datetime.now(tz=UTC)
        overlap = int(self.options.get("direct_overlap_seconds", DIRECT_OVERLAP_SECONDS))
        params: dict[str, str] = {
            "start_time": f"now-{max(1, int((now - since).total_seconds()) + 1)}seconds",
            # slurmdbd applies the state filter only with an explicit end of the window.
            "end_time": "now",
            "state": ",".join(records.DIRECT_QUERY_STATES),
            "skip_steps": "true",
        }
        if len(accounts) <= DIRECT_ACCOUNTS_IN_QUERY:
            params["account"] = ",".join(sorted(accounts))
        body = self.rest.call(
            "GET", f"/slurmdb/{self.api}/jobs", user=self.query_user, params=params
        )
        jobs = [j for j in (body or {}).get("jobs") or () if isinstance(j, dict)]
        found = records.direct_from_dbd(jobs, frozenset(accounts))
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
        if not path or path.startswith("/") or "\x00" in path:
            raise BackendError("path must be relative to the output directory")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise BackendError("path escapes the job's output directory")
        return files.open_file(self.shared_mount, self._parts(ref, "output", *parts))
