"""Slurm job records of every API version the backend speaks, read in one place into plain
values (`CtldJob`, `DbdJob`), and turned into the portal's JobStatus and UsageRecord. Pure
functions: no I/O here.

Readers of slurmrestd answers (this backend, the account push-down, the import of work done
outside the portal) call `ctld_jobs(body)` / `dbd_jobs(body)` and the value readers `number`,
`state_name`, `tres_list`, whatever the version: v0.0.38 (22.05) sends plain integers and state
strings; v0.0.40+ send {"set", "infinite", "number"} objects and lists of state flags.

An array is one portal job: its tasks are Slurm jobs sharing `array_job_id` (the backend id),
and their states fold into one (any task running -> running, else any waiting -> queued; when
all ended: cancelled > node_fail > timeout > failed > completed), their run times add up.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs.backends.base import DirectRecord, JobStatus, UsageRecord

COMMENT_PREFIX = "gpuc:"

# Slurm state names (job_state_string / dbd state.current) -> portal states.
QUEUED_STATES = frozenset(
    {
        "PENDING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
        "POWER_UP_NODE",
        "REVOKED",
    }
)
RUNNING_STATES = frozenset(
    {
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESIZING",
        "UPDATE_DB",
    }
)
FINAL_STATES: dict[str, tuple[str, str]] = {
    # Slurm state: (portal state, reason shown when Slurm gives none)
    "COMPLETED": ("completed", ""),
    "FAILED": ("failed", ""),
    "OUT_OF_MEMORY": ("failed", "out of memory"),
    "CANCELLED": ("cancelled", ""),
    "PREEMPTED": ("cancelled", "preempted by a higher-priority job"),
    "TIMEOUT": ("timeout", ""),
    "DEADLINE": ("timeout", "past its deadline"),
    "NODE_FAIL": ("node_fail", ""),
    "BOOT_FAIL": ("node_fail", "its node failed to boot"),
}
# When the tasks of an array end differently, the job ends as the first of these present.
ARRAY_FINAL_ORDER = ("cancelled", "node_fail", "timeout", "failed", "completed")
# Slurm's state_reason values that are not worth showing.
QUIET_REASONS = frozenset({"", "None", "NonZeroExitCode", "Prolog", "BeginTime"})

_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")


def comment_for(uuid: object) -> str:
    return f"{COMMENT_PREFIX}{uuid}"


# --- value readers (every version) ------------------------------------------------------------

# exit_code.status: 22.05 says SUCCESS or SIGNALED; v0.0.40+ say SUCCESS, ERROR (a non-zero
# exit), SIGNALED, CORE_DUMPED, PENDING or INVALID.
EXITED_STATUSES = frozenset({"SUCCESS", "ERROR", "EXITED"})
SIGNALED_STATUSES = frozenset({"SIGNALED", "CORE_DUMPED"})


def number(value: Any) -> int | None:
    """An integer as any version sends it: 5, or {"set": true, "infinite": false, "number": 5};
    None when unset, infinite or not a number."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def flags(value: Any) -> tuple[str, ...]:
    """A flag set as any version sends it: "RUNNING" or ["RUNNING", "COMPLETING"]."""
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if v)
    return ()


# Job state flags that name the state while set, in the precedence of Slurm's own
# job_state_string() (22.05 sent that string; v0.0.40+ send the base state and its flags).
_STATE_FLAGS = (
    "COMPLETING",
    "STAGE_OUT",
    "CONFIGURING",
    "RESIZING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
    "REVOKED",
    "RESV_DEL_HOLD",
    "SIGNALING",
    "POWER_UP_NODE",
)


def state_name(value: Any) -> str:
    """One state name out of "RUNNING" (v0.0.38) or ["COMPLETED", "COMPLETING"] (v0.0.40+),
    as Slurm's job_state_string() names it: a naming flag, else the base state."""
    names = flags(value)
    for flag in _STATE_FLAGS:
        if flag in names:
            return flag
    return names[0] if names else ""


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def ts(value: Any) -> datetime | None:
    """An epoch from Slurm (0, unset or missing = never) as an aware datetime."""
    seconds = number(value)
    if seconds is None or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def decode_wait_status(raw: Any) -> int | None:
    """slurmctld's v0.0.38 exit_code is a raw wait status: exit code, or 128 + signal."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        return None
    signal = raw & 0x7F
    return 128 + signal if signal else (raw >> 8) & 0xFF


def exit_object(value: Any) -> tuple[str, int | None, int | None]:
    """(status, return code, signal) of an exit_code object of any version:
    {"status": "SIGNALED" | ["SIGNALED"], "return_code": 0 | {...},
     "signal": {"signal_id": 9} (v0.0.38) | {"id": {...}, "name": "KILL"} (v0.0.40+)}."""
    if not isinstance(value, Mapping):
        return "", None, None
    status = state_name(value.get("status"))
    signal = value.get("signal") or {}
    signal_id = number(signal.get("id", signal.get("signal_id"))) if signal else None
    return status, number(value.get("return_code")), signal_id


def tres_list(items: Any) -> dict[str, int]:
    """[{type, name, count}] (accounting TRES of any version) as {"cpu": 1, "mem": 256,
    "gres/gpu": 2, "gres/gpu:h100": 2, ...}."""
    out: dict[str, int] = {}
    for item in items or ():
        if not isinstance(item, Mapping):
            continue
        kind = str(item.get("type") or "")
        name = item.get("name")
        count = number(item.get("count"))
        if not kind or count is None or count < 0:  # energy is -2 ("not measured") in 24.11
            continue
        out[f"{kind}/{name}" if name else kind] = count
    return out


def parse_tres(text: str) -> dict[str, int]:
    """ "cpu=1,mem=8000M,node=1,gres/gpu=2,gres/gpu:h100=2" -> {"cpu": 1, "mem": 8000, ...}
    with memory in MB."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        if name == "mem":
            match = _MEM_RE.match(value.strip())
            if match:
                out[name] = round(float(match[1]) * _MEM_UNITS[match[2] or "M"])
            continue
        try:
            out[name] = int(float(value))
        except ValueError:
            continue
    return out


def gpus_of(tres: Mapping[str, int]) -> tuple[int, str]:
    """(GPU count, GPU type) of a TRES map; the type only when exactly one is named."""
    count = tres.get("gres/gpu", 0)
    types = [k.split(":", 1)[1] for k, v in tres.items() if k.startswith("gres/gpu:") and v]
    return count, types[0] if len(types) == 1 else ""


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CtldJob:
    """A slurmctld job record (GET /slurm/<version>/jobs) of any version, in plain values.
    Times are epochs (0 = never); `exit_code` is the portal's: the code, or 128 + signal."""

    job_id: int
    array_job_id: int
    array_task_id: int | None
    state: str
    reason: str
    comment: str
    user: str
    account: str
    partition: str
    submit_time: int
    start_time: int
    end_time: int
    exit_code: int | None
    tres_alloc: str

    @property
    def key(self) -> str:
        """The backend id this record belongs to: its array's id, or its own."""
        return str(self.array_job_id or self.job_id)


@dataclass(frozen=True)
class DbdJob:
    """A slurmdbd job record (GET /slurmdb/<version>/jobs) of any version, in plain values.
    `comment` is the job's comment, None when none was recorded. Times are epochs (0 = never).
    `return_code` and `signal` are as accounting reports them (see dbd_exit_code)."""

    job_id: int
    array_job_id: int
    array_task_id: int | None
    state: str
    reason: str
    comment: str | None
    user: str
    account: str
    cluster: str
    partition: str
    submit_time: int
    start_time: int
    end_time: int
    elapsed: int
    exit_status: str
    return_code: int | None
    signal: int | None
    tres_allocated: Mapping[str, int] = field(default_factory=dict)
    tres_requested: Mapping[str, int] = field(default_factory=dict)
    name: str = ""
    het_job_id: int = 0
    het_offset: int | None = None
    time_limit: int | None = None  # minutes; None = unlimited or not said

    @property
    def key(self) -> str:
        return str(self.array_job_id or self.job_id)


def ctld_job(raw: Mapping[str, Any]) -> CtldJob:
    """Read one slurmctld job record of any version."""
    reason = text(raw.get("state_reason"))
    raw_exit = raw.get("exit_code")
    exit_code: int | None
    if isinstance(raw_exit, Mapping):
        status, code, signal = exit_object(raw_exit)
        if status in SIGNALED_STATUSES and signal is not None:
            # A launch failure carries a Slurm errno (e.g. 4021) that reads as a "signal"
            # above the real ones: no exit code.
            exit_code = None if reason == "JobLaunchFailure" and signal > 64 else 128 + signal
        elif status in EXITED_STATUSES:
            exit_code = code
        else:
            exit_code = None
    elif reason == "JobLaunchFailure" and isinstance(raw_exit, int) and raw_exit > 255:
        exit_code = None  # a Slurm errno, not a wait status
    else:
        exit_code = decode_wait_status(raw_exit)
    return CtldJob(
        job_id=number(raw.get("job_id")) or 0,
        array_job_id=number(raw.get("array_job_id")) or 0,
        array_task_id=number(raw.get("array_task_id")),
        state=state_name(raw.get("job_state")),
        reason=reason,
        comment=text(raw.get("comment")),
        user=text(raw.get("user_name")),
        account=text(raw.get("account")),
        partition=text(raw.get("partition")),
        submit_time=number(raw.get("submit_time")) or 0,
        start_time=number(raw.get("start_time")) or 0,
        end_time=number(raw.get("end_time")) or 0,
        exit_code=exit_code,
        tres_alloc=text(raw.get("tres_alloc_str")),
    )


def dbd_job(raw: Mapping[str, Any]) -> DbdJob:
    """Read one slurmdbd job record of any version."""
    state = raw.get("state") or {}
    times = raw.get("time") or {}
    array = raw.get("array") or {}
    het = raw.get("het") or {}
    tres = raw.get("tres") or {}
    comment = raw.get("comment")
    if isinstance(comment, Mapping):
        comment = comment.get("job")
    status, code, signal = exit_object(raw.get("exit_code"))
    return DbdJob(
        job_id=number(raw.get("job_id")) or 0,
        array_job_id=number(array.get("job_id")) or 0,
        array_task_id=number(array.get("task_id")),
        state=state_name(state.get("current")),
        reason=text(state.get("reason")),
        comment=str(comment) if comment else None,
        user=text(raw.get("user")),
        account=text(raw.get("account")),
        cluster=text(raw.get("cluster")),
        partition=text(raw.get("partition")),
        submit_time=number(times.get("submission")) or 0,
        start_time=number(times.get("start")) or 0,
        end_time=number(times.get("end")) or 0,
        elapsed=max(0, number(times.get("elapsed")) or 0),
        exit_status=status,
        return_code=code,
        signal=signal,
        tres_allocated=tres_list(tres.get("allocated")),
        tres_requested=tres_list(tres.get("requested")),
        name=text(raw.get("name")),
        het_job_id=number(het.get("job_id")) or 0,
        het_offset=number(het.get("job_offset")),
        time_limit=number(times.get("limit")),
    )


def ctld_jobs(body: Mapping[str, Any] | None) -> list[CtldJob]:
    """The records of a GET /slurm/<version>/jobs answer."""
    return [ctld_job(j) for j in (body or {}).get("jobs") or () if isinstance(j, Mapping)]


def dbd_jobs(body: Mapping[str, Any] | None) -> list[DbdJob]:
    """The records of a GET /slurmdb/<version>/jobs answer."""
    return [dbd_job(j) for j in (body or {}).get("jobs") or () if isinstance(j, Mapping)]


def dbd_exit_code(job: DbdJob, state: str) -> int | None:
    """The exit code accounting reports. Slurm 22.05 reports every plain exit as SUCCESS/0
    (even `exit 3`), so a 0 is believed only for a completed job."""
    if job.exit_status in SIGNALED_STATUSES:
        return 128 + job.signal if job.signal is not None else None
    code = job.return_code
    if code is None or (code == 0 and state != "completed"):
        return None
    return code


def is_refused_submission(job: CtldJob) -> bool:
    """The record slurmctld keeps of a submission it refused (FAILED, BadConstraints, never
    allocated): not a job that runs."""
    return job.state == "FAILED" and job.reason == "BadConstraints" and not job.tres_alloc


def group_ctld(jobs: Iterable[CtldJob]) -> dict[str, list[CtldJob]]:
    """slurmctld records keyed by backend id (an array's tasks together)."""
    out: dict[str, list[CtldJob]] = {}
    for job in jobs:
        out.setdefault(job.key, []).append(job)
    return out


def group_dbd(jobs: Iterable[DbdJob]) -> dict[str, list[DbdJob]]:
    out: dict[str, list[DbdJob]] = {}
    for job in jobs:
        out.setdefault(job.key, []).append(job)
    return out


def belongs_to(jobs: Sequence[CtldJob | DbdJob], comment: str) -> bool:
    """Do these records carry the portal job's comment? (Guards against reused Slurm ids.)
    Accounting without job comments stored (no AccountingStoreFlags=job_comment) is trusted."""
    for job in jobs:
        value = job.comment or None
        if value is None and isinstance(job, DbdJob):
            continue
        if value != comment:
            return False
    return True


def _reason(raw: str, fallback: str) -> str:
    return fallback if raw in QUIET_REASONS else raw


def _fold(
    backend_id: str,
    parts: Sequence[tuple[str, int | None, datetime | None, datetime | None, str]],
) -> JobStatus:
    """One JobStatus out of (portal state, exit code, start, end, reason) of each task."""
    states = [p[0] for p in parts]
    starts = [p[2] for p in parts if p[2] is not None]
    started = min(starts) if starts else None
    if "running" in states or ("queued" in states and started is not None):
        return JobStatus(backend_id, "running", started_at=started)
    if "queued" in states:
        reason = next((p[4] for p in parts if p[4]), "")
        return JobStatus(backend_id, "queued", reason=reason)
    state = next(s for s in ARRAY_FINAL_ORDER if s in states)
    chosen = next(p for p in parts if p[0] == state)
    ends = [p[3] for p in parts if p[3] is not None]
    exit_code = chosen[1]
    if state == "completed":
        exit_code = 0
    return JobStatus(
        backend_id,
        state,
        exit_code=exit_code,
        started_at=started,
        ended_at=max(ends) if ends else None,
        reason=chosen[4],
    )


def portal_state(slurm_state: str) -> tuple[str, str]:
    """(portal state, default reason) of a Slurm state name; unknown names read as running
    (they are transient flags such as RESIZING), never as an end."""
    name = (slurm_state or "").split()[0].upper() if slurm_state else ""
    if name in FINAL_STATES:
        return FINAL_STATES[name]
    if name in QUEUED_STATES:
        return "queued", ""
    return "running", ""


def status_from_ctld(backend_id: str, jobs: Sequence[CtldJob]) -> JobStatus:
    """The status of a job (or array) from its slurmctld records."""
    parts = []
    for job in jobs:
        state, default_reason = portal_state(job.state)
        final = state not in ("queued", "running")
        reason = _reason(job.reason, default_reason)
        if state == "queued" and reason:
            reason = f"waiting: {reason}"
        parts.append(
            (
                state,
                job.exit_code if final else None,
                ts(job.start_time) if state != "queued" else None,
                ts(job.end_time) if final else None,
                reason if final or state == "queued" else "",
            )
        )
    return _fold(backend_id, parts)


def status_from_dbd(backend_id: str, jobs: Sequence[DbdJob]) -> JobStatus:
    """The status of a job (or array) that slurmctld forgot, from its accounting records."""
    parts = []
    for job in jobs:
        state, default_reason = portal_state(job.state)
        final = state not in ("queued", "running")
        reason = _reason(job.reason, default_reason)
        exit_code = dbd_exit_code(job, state) if final else None
        if state == "failed" and exit_code is None:
            reason = "; ".join(filter(None, [reason, "exit code not recorded by accounting"]))
        parts.append(
            (
                state,
                exit_code,
                ts(job.start_time) if state != "queued" else None,
                ts(job.end_time) if final else None,
                reason if final else "",
            )
        )
    return _fold(backend_id, parts)


def usage_from_dbd(backend_id: str, jobs: Sequence[DbdJob]) -> UsageRecord | None:
    """Accounting of a finished job (or array): run time (summed over tasks) x allocated TRES.
    None while any task has no final record yet (slurmdbd lags slurmctld a little)."""
    if not jobs:
        return None
    elapsed = 0
    starts, ends = [], []
    per_task: dict[str, int] = {}
    for job in jobs:
        if job.state not in FINAL_STATES or not job.end_time:
            return None
        elapsed += job.elapsed
        if start := ts(job.start_time):
            starts.append(start)
        if end := ts(job.end_time):
            ends.append(end)
        for key, value in job.tres_allocated.items():
            per_task[key] = max(per_task.get(key, 0), value)
    return _usage_record(backend_id, elapsed, starts, ends, per_task, len(jobs), "slurmdbd")


def usage_from_ctld(backend_id: str, jobs: Sequence[CtldJob]) -> UsageRecord | None:
    """Usage from slurmctld's records (end - start x tres_alloc_str) when accounting has no
    final record yet; None while any task is still active."""
    if not jobs:
        return None
    elapsed = 0
    starts, ends = [], []
    per_task: dict[str, int] = {}
    for job in jobs:
        state, _ = portal_state(job.state)
        if state in ("queued", "running"):
            return None
        start, end = ts(job.start_time), ts(job.end_time)
        if start and end and end >= start:
            elapsed += round((end - start).total_seconds())
            starts.append(start)
            ends.append(end)
        tres = parse_tres(job.tres_alloc)
        for key, value in tres.items():
            per_task[key] = max(per_task.get(key, 0), value)
    return _usage_record(
        backend_id,
        elapsed,
        starts,
        ends,
        per_task,
        len(jobs),
        "slurmctld job record (slurmdbd had no final record yet)",
    )


def _usage_record(
    backend_id: str,
    elapsed: int,
    starts: list[datetime],
    ends: list[datetime],
    per_task: dict[str, int],
    tasks: int,
    source: str,
) -> UsageRecord:
    """One usage record from per-task totals: run time summed, TRES the largest task's."""
    gpus, gpu_type = gpus_of(per_task)
    return UsageRecord(
        backend_id=backend_id,
        elapsed_seconds=elapsed,
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=per_task.get("cpu", 0),
        memory_mb=per_task.get("mem", 0),
        tasks=1,
        started_at=min(starts) if starts else None,
        ended_at=max(ends) if ends else None,
        raw={
            "source": source,
            "array_tasks": tasks,
            "alloc_tres": {k: v for k, v in sorted(per_task.items())},
        },
    )


# --- work submitted outside the portal ---------------------------------------------------

# The `state` filter of a direct-work query: every final state (slurmdbd then selects the jobs
# that ENDED inside the start_time..end_time window, as `sacct -s ... -S ... -E ...` does).
DIRECT_QUERY_STATES = tuple(FINAL_STATES)


def dbd_direct_id(job: DbdJob) -> str:
    """The id sacct shows for one accounting record: 123 for a job, 123_4 for task 4 of array
    123, 123+1 for component 1 of heterogeneous job 123. Each is recorded and charged on its
    own, so an array whose tasks end in different windows is never charged in part twice."""
    if job.array_job_id and job.array_task_id is not None:
        return f"{job.array_job_id}_{job.array_task_id}"
    if job.het_job_id and job.het_offset is not None:
        return f"{job.het_job_id}+{job.het_offset}"
    return str(job.job_id)


def direct_from_dbd(jobs: Iterable[DbdJob], accounts: Collection[str]) -> list[DirectRecord]:
    """The finished jobs among accounting records (any version) that ran under `accounts`.

    Skipped: other accounts, jobs not ended yet (running, pending, requeued), and jobs that
    never started (cancelled while pending: nothing to charge). Portal-tagged jobs are kept
    with their tag (the service decides whether the tag is genuine)."""
    found: list[DirectRecord] = []
    for job in jobs:
        if job.account not in accounts or job.state not in FINAL_STATES:
            continue
        if not ts(job.end_time) or not ts(job.start_time):
            continue
        backend_id = dbd_direct_id(job)
        usage = usage_from_dbd(backend_id, [job])
        if usage is None:
            continue
        state, default_reason = portal_state(job.state)
        comment = job.comment or ""
        tagged = comment.startswith(COMMENT_PREFIX)
        found.append(
            DirectRecord(
                backend_id=backend_id,
                account=job.account,
                cluster_user=job.user,
                name=job.name[:128],
                state=state,
                usage=UsageRecord(
                    backend_id=backend_id,
                    elapsed_seconds=usage.elapsed_seconds,
                    gpus=usage.gpus,
                    gpu_type=usage.gpu_type,
                    cpus=usage.cpus,
                    memory_mb=usage.memory_mb,
                    tasks=1,
                    started_at=usage.started_at,
                    ended_at=usage.ended_at,
                    raw={
                        **usage.raw,
                        "slurm_job_id": job.job_id,
                        "partition": job.partition,
                        "time_limit_minutes": job.time_limit,
                    },
                ),
                exit_code=dbd_exit_code(job, state),
                submitted_at=ts(job.submit_time),
                portal_uuid=comment.removeprefix(COMMENT_PREFIX) if tagged else "",
                portal_backend_id=job.key if tagged else "",
                reason=_reason(job.reason, default_reason),
            )
        )
    return found
