"""Runs job scripts as subprocesses on the portal host: the zero-setup development backend.

Each job gets a folder <root>/<uuid>/ of its own (its HOME and working directory) holding
script.sh, stdout.log, stderr.log and output/ (its results; $GPUC_OUTPUT_DIR). What the portal
trusts lives outside it, in <root>/.records/: <uuid>.spec.json and <uuid>.status.json, written
by the job's supervisor (local_runner.py, the job's parent process), which gets the spec on its
stdin (so a submitter killed half-way leaves nothing behind: find() never sees half a job),
runs `bash script.sh` with an argv list, never a shell string, and a clean environment (an
allowlist, never the portal's own variables), enforces the time limit and records start, end
and exit code. Both records carry an HMAC under a per-job key derived from SECRET_KEY, which
the supervisor gets through its stdin and keeps only in (non-dumpable) memory: the job runs as
the portal's Unix user and can reach <root>/.records/, but cannot sign. A record that fails its
signature stops the job (node_fail) and charges it from its submission until now (at most its
limit); a signed one is still checked against the portal's clock (started after the
submission, ended after the start and not in the future, within the limit). A portal running
as root cannot keep the key from its jobs (root reads any memory): run it as a plain user. The
job's files are read without following any link (jobs.backends.files): a job that links its
log or output folder to another job's files (or to /) gets a 400, never their bytes.

Options: root (default settings.GPUC_LOCAL_BACKEND_ROOT), gpu_types, time_limit_scale (default
1.0: a time limit of N minutes kills the job after N × 60 × scale seconds; tests and demos use
a small scale to see timeouts quickly). It refuses to run unless
settings.GPUC_LOCAL_BACKEND_ENABLED. Jobs run as the portal's own Unix user (there is no
privilege to switch to the cluster account), which is why it is for development only. Array
tasks run one after another, so usage is the whole array's wall time with one task's
resources (tasks=1); `raw["tasks_run"]` says how many ran.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.utils.crypto import salted_hmac

from jobs.arrays import parse_array
from jobs.backends import files
from jobs.backends.base import (
    BackendError,
    BackendUnavailable,
    ComputeBackend,
    JobRef,
    JobSpec,
    JobStatus,
    LogChunk,
    ResultFile,
    UsageRecord,
)
from jobs.backends.local_runner import sign

RUNNER = Path(__file__).with_name("local_runner.py")
RECORDS = ".records"  # the portal's own records, outside every job's folder
PROJECTS = "projects"  # <root>/projects/<project>/: project storage ($GPUC_PROJECT_DIR)
STREAM_FILES = {"stdout": "stdout.log", "stderr": "stderr.log"}
MAX_RESULTS = 10_000
FINAL = {"completed", "failed", "cancelled", "timeout", "node_fail"}
# What a job's supervisor is started with: nothing of the portal's environment.
RUNNER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
RECORD_KEY_SALT = "jobs.backends.local.records"
TAMPERED = {"tampered": True}
# The supervisor's kill grace per task plus clock slack: a record longer than the limit by more
# than this was not written by the supervisor.
LIMIT_SLACK_SECONDS = 10.0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


SESSION_FILE = "session.json"
SESSION_FILE_MAX = 4096


class LocalBackend(ComputeBackend):
    """Subprocesses in per-job directories (development and demos)."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = []
        root = options.get("root")
        if root is not None and (not isinstance(root, str) or not os.path.isabs(root)):
            problems.append("option 'root' must be an absolute directory path")
        types = options.get("gpu_types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            problems.append("option 'gpu_types' must be a list of names")
        scale = options.get("time_limit_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
            problems.append("option 'time_limit_scale' must be a positive number")
        return problems

    @property
    def root(self) -> Path:
        return Path(self.options.get("root") or settings.GPUC_LOCAL_BACKEND_ROOT)

    def project_storage_root(self) -> str | None:
        return str(self.root / PROJECTS)

    def project_dir(self, project: str) -> str | None:
        return str(self.root / PROJECTS / project) if project else None

    def job_dir(self, backend_id: str | uuid.UUID) -> Path:
        """The job's directory; the backend id is the portal uuid, validated as one."""
        try:
            key = str(uuid.UUID(str(backend_id)))
        except ValueError:
            raise BackendError(f"not a local job id: {backend_id!r}") from None
        return self.root / key

    def record_path(self, backend_id: str | uuid.UUID, kind: str) -> Path:
        """<root>/.records/<uuid>.<kind>.json: the supervisor's records (spec, status, cancel)."""
        return self.root / RECORDS / f"{self.job_dir(backend_id).name}.{kind}"

    @staticmethod
    def _key(backend_id: str | uuid.UUID) -> str:
        """The job's record key: only the portal (SECRET_KEY) and the job's supervisor know it."""
        return salted_hmac(RECORD_KEY_SALT, str(backend_id), algorithm="sha256").hexdigest()

    def _record(self, backend_id: str | uuid.UUID, kind: str) -> dict[str, Any]:
        """A record checked against its signature: {} when there is none yet, TAMPERED when
        someone else wrote it (the job runs as the portal's Unix user and can reach it)."""
        name = f"{self.job_dir(backend_id).name}.{kind}.json"
        try:
            with files.open_file(self.root, [RECORDS, name]) as handle:
                value = json.loads(handle.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, BackendError):
            return dict(TAMPERED)
        if not isinstance(value, dict):
            return dict(TAMPERED)
        signature = value.pop("signature", None)
        expected = sign(self._key(backend_id), value)
        if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
            return dict(TAMPERED)
        return value

    def _status(self, backend_id: str | uuid.UUID) -> dict[str, Any]:
        return self._record(backend_id, "status")

    def _spec(self, backend_id: str | uuid.UUID) -> dict[str, Any]:
        return self._record(backend_id, "spec")

    # --- the contract --------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> str:
        if not settings.GPUC_LOCAL_BACKEND_ENABLED:
            raise BackendError("The local backend is disabled (GPUC_LOCAL_BACKEND_ENABLED)")
        if spec.image or not spec.script:
            raise BackendError("The local backend runs scripts, not container images")
        jobdir = self.job_dir(spec.uuid)
        if self._spec(spec.uuid):
            return str(spec.uuid)
        indices = list(parse_array(spec.array).indices) if spec.array else []
        # An allowlist: the job's own variables and ours, never os.environ.
        env = {
            **RUNNER_ENV,
            **dict(spec.env),
            "HOME": str(jobdir),
            "GPUC_JOB_UUID": str(spec.uuid),
            "GPUC_JOB_NAME": spec.name,
            "GPUC_JOB_DIR": str(jobdir),
            "GPUC_OUTPUT_DIR": str(jobdir / "output"),
            "GPUC_GPUS": str(spec.gpus),
            "GPUC_CPUS": str(spec.cpus),
        }
        if project_dir := self.project_dir(spec.project):
            env["GPUC_PROJECT_DIR"] = project_dir
        payload = {
            "uuid": str(spec.uuid),
            "name": spec.name,
            "time_limit_seconds": spec.time_limit_minutes
            * 60
            * float(self.options.get("time_limit_scale", 1.0)),
            "gpus": spec.gpus,
            "gpu_type": spec.gpu_type,
            "cpus": spec.cpus,
            "memory_mb": spec.memory_mb,
            "array_indices": indices,
            "env": env,
            "submitted_at": time.time(),
        }
        key = self._key(spec.uuid)
        payload["signature"] = sign(key, payload)
        try:
            (self.root / RECORDS).mkdir(parents=True, exist_ok=True, mode=0o700)
            (jobdir / "output").mkdir(parents=True, exist_ok=True, mode=0o700)
            if project_dir:
                os.makedirs(project_dir, mode=0o700, exist_ok=True)
            script = jobdir / "script.sh"
            script.unlink(missing_ok=True)  # a link the job left is replaced, not written through
            script.write_text(spec.script)
            script.chmod(0o700)
        except OSError as exc:
            raise BackendUnavailable(f"cannot prepare the job directory: {exc}") from exc
        try:
            # The supervisor writes the spec record itself once it has read all of it, then
            # detaches: the job exists for find() only if the supervisor got it whole.
            launcher = subprocess.Popen(  # noqa: S603 (fixed argv: our runner and paths)
                [sys.executable, str(RUNNER), str(self.root), str(spec.uuid)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                env=RUNNER_ENV,
                start_new_session=True,
            )
            launcher.communicate(json.dumps({"spec": payload, "key": key}).encode(), timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendUnavailable(f"cannot start the job: {exc}") from exc
        if launcher.returncode != 0 or not self._spec(spec.uuid):
            raise BackendUnavailable(f"the job's supervisor failed ({launcher.returncode})")
        return str(spec.uuid)

    def find(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        return {u: str(u) for u in uuids if self.record_path(u, "spec.json").exists()}

    def cancel(self, ref: JobRef) -> None:
        if not self._spec(ref.backend_id):
            return
        try:
            self._ask_to_stop(ref.backend_id)
        except OSError as exc:
            raise BackendUnavailable(f"cannot ask the job to stop: {exc}") from exc
        status = self._status(ref.backend_id)
        if status.get("state") in FINAL:
            return
        if pid := status.get("pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGTERM)

    def _ask_to_stop(self, backend_id: str | uuid.UUID) -> None:
        """The cancel flag the supervisor looks for every second, created without following a
        link someone may have put in its place."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        os.close(os.open(self.record_path(backend_id, "cancel"), flags, 0o600))

    def _job_status(self, backend_id: str) -> JobStatus | None:
        spec = self._spec(backend_id)
        if not spec:
            return None
        status = self._status(backend_id)
        if spec.get("tampered") or status.get("tampered"):
            # Records the supervisor did not write: the job is stopped and, with no record of
            # its own to go by, charged from its submission until now (at most its limit).
            with contextlib.suppress(OSError):
                self._ask_to_stop(backend_id)
            started, ended = (
                (None, None) if spec.get("tampered") else self._times(spec, {}, state="tampered")
            )
            return JobStatus(
                backend_id=backend_id,
                state="node_fail",
                started_at=_ts(started),
                ended_at=_ts(ended),
                reason="the job altered the records of its supervisor",
            )
        state = status.get("state", "queued")
        reason = str(status.get("reason", ""))
        if not status and time.time() - float(spec.get("submitted_at", 0)) > 60:
            state, reason = "node_fail", "the job's supervisor never started"
        if state not in FINAL and (runner := status.get("runner_pid")):
            try:
                os.kill(int(runner), 0)
            except ProcessLookupError:
                status = self._status(backend_id)  # it may have just written its last words
                state = status.get("state", state)
                if state not in FINAL:
                    state, reason = "node_fail", "the job's supervisor process disappeared"
            except PermissionError:
                pass
        started, ended = self._times(spec, status, state=state)
        return JobStatus(
            backend_id=backend_id,
            state=state,
            exit_code=status.get("exit_code"),
            started_at=_ts(started),
            ended_at=_ts(ended) if state in FINAL else None,
            reason=reason,
        )

    @staticmethod
    def _times(
        spec: Mapping[str, Any], status: Mapping[str, Any], *, state: str
    ) -> tuple[float | None, float | None]:
        """The supervisor's start and end, checked against the portal's clock: both after the
        submission, the end after the start and not in the future, the run within its time
        limit. Anything else was not written by the supervisor: the job is taken to have run
        from its submission until now, at most its limit (it can only cost more)."""
        submitted = float(spec.get("submitted_at", 0))
        tasks = max(1, len(spec.get("array_indices") or []))
        longest = float(spec.get("time_limit_seconds", 0)) * tasks + LIMIT_SLACK_SECONDS * tasks
        now = time.time()
        final = state in FINAL or state == "tampered"
        started, ended = _number(status.get("started_at")), _number(status.get("ended_at"))
        if started is None and state in ("queued", "cancelled", "node_fail"):
            return None, None  # not started yet, or ended before it started
        if started is not None and submitted - 1 <= started <= now + 1:
            if not final:
                return started, None
            if ended is not None and started <= ended <= now + 1 and ended - started <= longest:
                return started, ended
        return submitted, min(now, submitted + longest) if final else None

    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for ref in refs:
            if (status := self._job_status(ref.backend_id)) is not None:
                out[ref.backend_id] = status
        return out

    def usage(self, refs: Sequence[JobRef]) -> dict[str, UsageRecord]:
        out: dict[str, UsageRecord] = {}
        for ref in refs:
            status = self._status(ref.backend_id)
            spec = self._spec(ref.backend_id)
            state = "tampered" if status.get("tampered") else status.get("state")
            if (state not in FINAL and state != "tampered") or not spec or spec.get("tampered"):
                continue  # (a forged spec: the sync charges from what the portal saw)
            started, ended = self._times(spec, status, state=str(state))
            ran = started is not None and ended is not None
            elapsed = max(0, round(float(ended or 0) - float(started or 0))) if ran else 0
            out[ref.backend_id] = UsageRecord(
                backend_id=ref.backend_id,
                elapsed_seconds=elapsed,
                gpus=int(spec["gpus"]),
                gpu_type=str(spec["gpu_type"]),
                cpus=int(spec["cpus"]),
                memory_mb=int(spec["memory_mb"]),
                tasks=1 if ran else 0,
                started_at=_ts(started),
                ended_at=_ts(ended),
                raw={"tasks_run": status.get("tasks_run", 0)},
            )
        return out

    def read_log(self, ref: JobRef, stream: str, offset: int, limit: int) -> LogChunk:
        """Bytes of <uuid>/stdout.log or stderr.log; a link anywhere on the way is refused."""
        if stream not in STREAM_FILES:
            raise BackendError(f"unknown stream {stream!r}")
        parts = [self.job_dir(ref.backend_id).name, STREAM_FILES[stream]]
        try:
            return files.read_chunk(self.root, parts, offset, limit)
        except (NotADirectoryError, IsADirectoryError):
            return LogChunk(data=b"", next_offset=0, eof=True)

    def _output(self, ref: JobRef, *parts: str) -> list[str]:
        return [self.job_dir(ref.backend_id).name, "output", *parts]

    def list_results(self, ref: JobRef) -> list[ResultFile]:
        """Regular files under <uuid>/output, which must be a folder, not a link."""
        return files.list_files(self.root, self._output(ref), limit=MAX_RESULTS)

    def open_result(self, ref: JobRef, path: str) -> BinaryIO:
        return files.open_file(self.root, self._output(ref, *files.result_parts(path)))

    def read_session_file(self, ref: JobRef) -> bytes:
        """<uuid>/session.json (not under output/, so never listed as a result)."""
        parts = [self.job_dir(ref.backend_id).name, SESSION_FILE]
        with files.open_file(self.root, parts) as handle:
            return handle.read(SESSION_FILE_MAX)
