"""A fake cluster of N GPUs with a synthetic clock, for tests and scale benchmarks.

Options:
    gpus        total GPUs (default 64)
    gpu_types   names accepted for jobs (the pool is shared by all types)
    clock       "real" (default: wall time) or "manual" (time moves only with advance())
    default_duration_seconds   run time of a job whose env does not say (default 60)

A job's env drives it: SIM_DURATION_SECONDS (run time), SIM_EXIT_CODE (0 = completed,
otherwise failed), SIM_NODE_FAIL=1 (ends in node_fail). A run longer than the time limit ends
in `timeout` at the limit. Array jobs run all their tasks at once (gpus × tasks GPUs).

The scheduler starts queued jobs first-in first-out as GPUs free up (CPU-only jobs start at
once) and finishes them in end-time order, so advancing the clock costs O(jobs that change).
State lives in this process's memory, keyed by cluster name: every process has its own
simulated cluster. That suits tests and the in-process benchmarks; it is not shared between
a web server and a Celery worker.
"""

from __future__ import annotations

import heapq
import io
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

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


@dataclass(slots=True)
class _SimJob:
    id: str
    uuid: uuid.UUID
    name: str
    gpus: int  # GPUs held while running (per task × tasks)
    gpus_per_task: int
    gpu_type: str
    cpus: int
    memory_mb: int
    tasks: int
    duration: float
    limit: float
    exit_code: int
    node_fail: bool
    state: str = "queued"
    submitted: float = 0.0
    started: float | None = None
    ended: float | None = None
    final_exit: int | None = None
    status: JobStatus | None = None  # cached until the job changes (poll is per tick)


@dataclass
class _SimCluster:
    gpus: int
    clock_manual: bool
    epoch: float = field(default_factory=time.time)
    offset: float = 0.0
    free: int = 0
    next_id: int = 1
    jobs: dict[str, _SimJob] = field(default_factory=dict)
    by_uuid: dict[uuid.UUID, str] = field(default_factory=dict)
    queue: deque[str] = field(default_factory=deque)
    ends: list[tuple[float, int, str]] = field(default_factory=list)
    seq: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    available: bool = True

    def now(self) -> float:
        return self.epoch + self.offset if self.clock_manual else time.time()


_CLUSTERS: dict[str, _SimCluster] = {}
_REGISTRY_LOCK = threading.Lock()


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class SimulatedBackend(ComputeBackend):
    """In-memory scheduler; see the module docstring for options and env knobs."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = []
        gpus = options.get("gpus", 64)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            problems.append("option 'gpus' must be a non-negative integer")
        if options.get("clock", "real") not in ("real", "manual"):
            problems.append("option 'clock' must be 'real' or 'manual'")
        types = options.get("gpu_types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            problems.append("option 'gpu_types' must be a list of names")
        return problems

    # --- state ---------------------------------------------------------------------------

    @property
    def state(self) -> _SimCluster:
        with _REGISTRY_LOCK:
            sim = _CLUSTERS.get(self.name)
            if sim is None:
                total = int(self.options.get("gpus", 64))
                sim = _SimCluster(
                    gpus=total, clock_manual=self.options.get("clock") == "manual", free=total
                )
                _CLUSTERS[self.name] = sim
            return sim

    @classmethod
    def reset(cls, name: str) -> None:
        """Forget a simulated cluster entirely (tests, benchmarks)."""
        with _REGISTRY_LOCK:
            _CLUSTERS.pop(name, None)

    def advance(self, seconds: float) -> None:
        """Move a manual clock forward, starting and finishing jobs on the way."""
        sim = self.state
        with sim.lock:
            if not sim.clock_manual:
                raise BackendError("advance() needs the option clock='manual'")
            sim.offset += seconds
            self._run_until(sim, sim.now())

    def set_available(self, available: bool) -> None:
        """Simulate an outage: every call raises BackendUnavailable while False."""
        self.state.available = available

    def _check(self, sim: _SimCluster) -> None:
        if not sim.available:
            raise BackendUnavailable(f"simulated cluster {self.name} is down")

    def _start_queued(self, sim: _SimCluster, at: float) -> None:
        while sim.queue:
            job = sim.jobs[sim.queue[0]]
            if job.state != "queued":
                sim.queue.popleft()
                continue
            if job.gpus > sim.free:
                return  # strict FIFO: the head waits for GPUs
            sim.queue.popleft()
            self._start(sim, job, at)

    def _start(self, sim: _SimCluster, job: _SimJob, at: float) -> None:
        sim.free -= job.gpus
        job.state = "running"
        job.started = at
        job.status = None
        sim.seq += 1
        heapq.heappush(sim.ends, (at + min(job.duration, job.limit), sim.seq, job.id))

    def _run_until(self, sim: _SimCluster, now: float) -> None:
        while sim.ends and sim.ends[0][0] <= now:
            end, _, job_id = heapq.heappop(sim.ends)
            job = sim.jobs[job_id]
            if job.state != "running":
                continue  # cancelled meanwhile
            self._finish(sim, job, end)
            self._start_queued(sim, end)
        self._start_queued(sim, now)

    def _finish(self, sim: _SimCluster, job: _SimJob, at: float) -> None:
        sim.free += job.gpus
        job.ended = at
        job.status = None
        if job.duration > job.limit:
            job.state, job.final_exit = "timeout", None
        elif job.node_fail:
            job.state, job.final_exit = "node_fail", None
        else:
            job.final_exit = job.exit_code
            job.state = "completed" if job.exit_code == 0 else "failed"

    # --- the contract --------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> str:
        sim = self.state
        with sim.lock:
            self._check(sim)
            if existing := sim.by_uuid.get(spec.uuid):
                return existing
            env = dict(spec.env)
            try:
                duration = float(
                    env.get(
                        "SIM_DURATION_SECONDS", self.options.get("default_duration_seconds", 60)
                    )
                )
                exit_code = int(env.get("SIM_EXIT_CODE", "0"))
            except ValueError:
                raise BackendError("SIM_DURATION_SECONDS/SIM_EXIT_CODE must be numbers") from None
            tasks = parse_array(spec.array).size if spec.array else 1
            if spec.gpus * tasks > sim.gpus:
                raise BackendError(
                    f"the job needs {spec.gpus * tasks} GPUs; the cluster has {sim.gpus}"
                )
            job_id = str(sim.next_id)
            sim.next_id += 1
            now = sim.now()
            self._run_until(sim, now)
            job = _SimJob(
                id=job_id,
                uuid=spec.uuid,
                name=spec.name,
                gpus=spec.gpus * tasks,
                gpus_per_task=spec.gpus,
                gpu_type=spec.gpu_type,
                cpus=spec.cpus,
                memory_mb=spec.memory_mb,
                tasks=tasks,
                duration=max(0.0, duration),
                limit=spec.time_limit_minutes * 60.0,
                exit_code=exit_code,
                node_fail=env.get("SIM_NODE_FAIL") == "1",
                submitted=now,
            )
            sim.jobs[job_id] = job
            sim.by_uuid[spec.uuid] = job_id
            sim.queue.append(job_id)
            self._start_queued(sim, now)
            return job_id

    def find(self, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        sim = self.state
        with sim.lock:
            self._check(sim)
            return {u: sim.by_uuid[u] for u in uuids if u in sim.by_uuid}

    def cancel(self, ref: JobRef) -> None:
        sim = self.state
        with sim.lock:
            self._check(sim)
            now = sim.now()
            self._run_until(sim, now)
            job = sim.jobs.get(ref.backend_id)
            if job is None or job.state not in ("queued", "running"):
                return
            if job.state == "running":
                sim.free += job.gpus
            job.state = "cancelled"
            job.ended = now
            job.status = None
            self._start_queued(sim, now)

    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        sim = self.state
        with sim.lock:
            self._check(sim)
            self._run_until(sim, sim.now())
            out: dict[str, JobStatus] = {}
            jobs = sim.jobs
            for ref in refs:
                job = jobs.get(ref.backend_id)
                if job is None:
                    continue
                if job.status is None:
                    job.status = JobStatus(
                        backend_id=job.id,
                        state=job.state,
                        exit_code=job.final_exit,
                        started_at=_ts(job.started),
                        ended_at=_ts(job.ended),
                    )
                out[job.id] = job.status
            return out

    def usage(self, refs: Sequence[JobRef]) -> dict[str, UsageRecord]:
        sim = self.state
        with sim.lock:
            self._check(sim)
            out: dict[str, UsageRecord] = {}
            for ref in refs:
                job = sim.jobs.get(ref.backend_id)
                if job is None or job.ended is None:
                    continue
                ran = job.started is not None
                elapsed = round(job.ended - job.started) if job.started is not None else 0
                out[job.id] = UsageRecord(
                    backend_id=job.id,
                    elapsed_seconds=elapsed,
                    gpus=job.gpus_per_task,
                    gpu_type=job.gpu_type,
                    cpus=job.cpus,
                    memory_mb=job.memory_mb,
                    tasks=job.tasks if ran else 0,
                    started_at=_ts(job.started),
                    ended_at=_ts(job.ended),
                )
            return out

    def _log(self, job: _SimJob, stream: str) -> bytes:
        if stream == "stderr":
            return b"" if job.state != "failed" else f"exit code {job.final_exit}\n".encode()
        lines = [f"[sim] job {job.name} queued\n"]
        if job.started is not None:
            lines.append(f"[sim] running on {job.gpus} GPU(s) from {_ts(job.started)}\n")
        if job.ended is not None:
            lines.append(f"[sim] {job.state} at {_ts(job.ended)}\n")
        return "".join(lines).encode()

    def read_log(self, ref: JobRef, stream: str, offset: int, limit: int) -> LogChunk:
        sim = self.state
        with sim.lock:
            self._check(sim)
            job = sim.jobs.get(ref.backend_id)
            data = self._log(job, stream) if job is not None else b""
        size = len(data)
        start = max(0, size + offset) if offset < 0 else offset
        if start > size:
            return LogChunk(data=b"", next_offset=size, eof=True)
        chunk = data[start : start + limit]
        return LogChunk(data=chunk, next_offset=start + len(chunk), eof=start + len(chunk) >= size)

    def _results(self, job: _SimJob) -> dict[str, bytes]:
        if job.state != "completed":
            return {}
        return {"summary.txt": f"{job.uuid} {job.state} {job.tasks} task(s)\n".encode()}

    def list_results(self, ref: JobRef) -> list[ResultFile]:
        sim = self.state
        with sim.lock:
            self._check(sim)
            job = sim.jobs.get(ref.backend_id)
            files = self._results(job) if job is not None else {}
            return [
                ResultFile(path=p, size=len(b), modified=_ts(job.ended if job else None))
                for p, b in files.items()
            ]

    def open_result(self, ref: JobRef, path: str) -> BinaryIO:
        sim = self.state
        with sim.lock:
            self._check(sim)
            job = sim.jobs.get(ref.backend_id)
            files = self._results(job) if job is not None else {}
        if path not in files:
            raise FileNotFoundError(path)
        return io.BytesIO(files[path])
