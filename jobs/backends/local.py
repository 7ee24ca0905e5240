"""Runs job scripts as subprocesses on the portal host: the zero-setup development backend.

Each job gets <root>/<uuid>/ holding script.sh, spec.json, stdout.log, stderr.log, status.json
and output/ (its results; the job sees it as $GPUC_OUTPUT_DIR). A detached supervisor
(local_runner.py) runs `bash script.sh` with an argv list, never a shell string, enforces the
time limit and records state in status.json, so any process (web, worker) can poll it.

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

from jobs.arrays import parse_array
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
from jobs.backends.files import list_result_files, open_result_file

RUNNER = Path(__file__).with_name("local_runner.py")
STREAM_FILES = {"stdout": "stdout.log", "stderr": "stderr.log"}
MAX_RESULTS = 10_000
FINAL = {"completed", "failed", "cancelled", "timeout", "node_fail"}


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


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

    def job_dir(self, backend_id: str | uuid.UUID) -> Path:
        """The job's directory; the backend id is the portal uuid, validated as one."""
        try:
            key = str(uuid.UUID(str(backend_id)))
        except ValueError:
            raise BackendError(f"not a local job id: {backend_id!r}") from None
        return self.root / key

    def _status(self, jobdir: Path) -> dict[str, Any]:
        try:
            return dict(json.loads((jobdir / "status.json").read_text()))
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}

    def _spec(self, jobdir: Path) -> dict[str, Any]:
        return dict(json.loads((jobdir / "spec.json").read_text()))

    # --- the contract --------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> str:
        if not settings.GPUC_LOCAL_BACKEND_ENABLED:
            raise BackendError("The local backend is disabled (GPUC_LOCAL_BACKEND_ENABLED)")
        if spec.image or not spec.script:
            raise BackendError("The local backend runs scripts, not container images")
        jobdir = self.job_dir(spec.uuid)
        if (jobdir / "spec.json").exists():
            return str(spec.uuid)
        indices = list(parse_array(spec.array).indices) if spec.array else []
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            **dict(spec.env),
            "HOME": str(jobdir),
            "GPUC_JOB_UUID": str(spec.uuid),
            "GPUC_JOB_NAME": spec.name,
            "GPUC_JOB_DIR": str(jobdir),
            "GPUC_OUTPUT_DIR": str(jobdir / "output"),
            "GPUC_GPUS": str(spec.gpus),
            "GPUC_CPUS": str(spec.cpus),
        }
        try:
            (jobdir / "output").mkdir(parents=True, exist_ok=True, mode=0o700)
            script = jobdir / "script.sh"
            script.write_text(spec.script)
            script.chmod(0o700)
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
            tmp = jobdir / ".spec.tmp"
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, jobdir / "spec.json")
        except OSError as exc:
            raise BackendUnavailable(f"cannot prepare the job directory: {exc}") from exc
        try:
            launcher = subprocess.Popen(  # noqa: S603 (fixed argv: our runner and a path)
                [sys.executable, str(RUNNER), str(jobdir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
            launcher.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            (jobdir / "spec.json").unlink(missing_ok=True)
            raise BackendUnavailable(f"cannot start the job: {exc}") from exc
        return str(spec.uuid)

    def find(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        return {u: str(u) for u in uuids if (self.job_dir(u) / "spec.json").exists()}

    def cancel(self, ref: JobRef) -> None:
        jobdir = self.job_dir(ref.backend_id)
        if not jobdir.is_dir():
            return
        (jobdir / "cancel").touch()
        status = self._status(jobdir)
        if status.get("state") in FINAL:
            return
        if pid := status.get("pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGTERM)

    def _job_status(self, backend_id: str) -> JobStatus | None:
        jobdir = self.job_dir(backend_id)
        if not (jobdir / "spec.json").exists():
            return None
        status = self._status(jobdir)
        state = status.get("state", "queued")
        reason = str(status.get("reason", ""))
        if not status and time.time() - self._spec(jobdir).get("submitted_at", 0) > 60:
            state, reason = "node_fail", "the job's supervisor never started"
        if state not in FINAL and (runner := status.get("runner_pid")):
            try:
                os.kill(int(runner), 0)
            except ProcessLookupError:
                status = self._status(jobdir)  # it may have just written its last words
                state = status.get("state", state)
                if state not in FINAL:
                    state, reason = "node_fail", "the job's supervisor process disappeared"
            except PermissionError:
                pass
        return JobStatus(
            backend_id=backend_id,
            state=state,
            exit_code=status.get("exit_code"),
            started_at=_ts(status.get("started_at")),
            ended_at=_ts(status.get("ended_at")) if state in FINAL else None,
            reason=reason,
        )

    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for ref in refs:
            if (status := self._job_status(ref.backend_id)) is not None:
                out[ref.backend_id] = status
        return out

    def usage(self, refs: Sequence[JobRef]) -> dict[str, UsageRecord]:
        out: dict[str, UsageRecord] = {}
        for ref in refs:
            jobdir = self.job_dir(ref.backend_id)
            status = self._status(jobdir)
            if status.get("state") not in FINAL or not (jobdir / "spec.json").exists():
                continue
            spec = self._spec(jobdir)
            started, ended = status.get("started_at"), status.get("ended_at")
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
        if stream not in STREAM_FILES:
            raise BackendError(f"unknown stream {stream!r}")
        path = self.job_dir(ref.backend_id) / STREAM_FILES[stream]
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = max(0, size + offset) if offset < 0 else offset
                if start > size:
                    return LogChunk(data=b"", next_offset=size, eof=True)
                handle.seek(start)
                data = handle.read(min(limit, size - start))
        except FileNotFoundError:
            return LogChunk(data=b"", next_offset=0, eof=True)
        end = start + len(data)
        return LogChunk(data=data, next_offset=end, eof=end >= size)

    def _output(self, ref: JobRef) -> str:
        return os.path.realpath(self.job_dir(ref.backend_id) / "output")

    def list_results(self, ref: JobRef) -> list[ResultFile]:
        return list_result_files(self._output(ref), limit=MAX_RESULTS)

    def open_result(self, ref: JobRef, path: str) -> BinaryIO:
        return open_result_file(self._output(ref), path)
