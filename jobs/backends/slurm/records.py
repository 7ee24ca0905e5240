"""Slurm job records (slurmctld's v0.0.38 and slurmdbd's dbv0.0.38 shapes) turned into the
portal's JobStatus and UsageRecord. Pure functions: no I/O here.

An array is one portal job: its tasks are Slurm jobs sharing `array_job_id` (the backend id),
and their states fold into one (any task running -> running, else any waiting -> queued; when
all ended: cancelled > node_fail > timeout > failed > completed), their run times add up.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
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


def ts(value: Any) -> datetime | None:
    """An epoch from Slurm (0 or missing = never) as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def decode_wait_status(raw: Any) -> int | None:
    """slurmctld's v0.0.38 exit_code is a raw wait status: exit code, or 128 + signal."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        return None
    signal = raw & 0x7F
    return 128 + signal if signal else (raw >> 8) & 0xFF


def ctld_exit_code(record: Mapping[str, Any]) -> int | None:
    """The exit code of an ended slurmctld record; a launch failure carries a Slurm errno
    (e.g. 4021) instead of a wait status, so it has none."""
    raw = record.get("exit_code")
    if record.get("state_reason") == "JobLaunchFailure" and isinstance(raw, int) and raw > 255:
        return None
    return decode_wait_status(raw)


def dbd_exit_code(record: Mapping[str, Any], state: str) -> int | None:
    """dbv0.0.38's exit_code {status, return_code, signal}. Slurm 22.05 reports every plain exit
    as SUCCESS/0 (even `exit 3`), so a 0 is believed only for a completed job."""
    exit_info = record.get("exit_code") or {}
    status = str(exit_info.get("status") or "")
    if status == "SIGNALED":
        signal = (exit_info.get("signal") or {}).get("signal_id")
        return 128 + int(signal) if isinstance(signal, int) else None
    code = exit_info.get("return_code")
    if not isinstance(code, int) or (code == 0 and state != "completed"):
        return None
    return code


def is_refused_submission(record: Mapping[str, Any]) -> bool:
    """The record slurmctld keeps of a submission it refused (FAILED, BadConstraints, never
    allocated): not a job that runs."""
    return (
        record.get("job_state") == "FAILED"
        and record.get("state_reason") == "BadConstraints"
        and not record.get("tres_alloc_str")
    )


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


def tres_list(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """dbv0.0.38's [{type, name, count}] as {"cpu": 1, "mem": 256, "gres/gpu": 2, ...}."""
    out: dict[str, int] = {}
    for item in items or ():
        kind = str(item.get("type") or "")
        name = item.get("name")
        count = item.get("count")
        if not kind or not isinstance(count, int):
            continue
        out[f"{kind}/{name}" if name else kind] = count
    return out


def gpus_of(tres: Mapping[str, int]) -> tuple[int, str]:
    """(GPU count, GPU type) of a TRES map; the type only when exactly one is named."""
    count = tres.get("gres/gpu", 0)
    types = [k.split(":", 1)[1] for k, v in tres.items() if k.startswith("gres/gpu:") and v]
    return count, types[0] if len(types) == 1 else ""


def array_key(record: Mapping[str, Any]) -> str:
    """The backend id a slurmctld record belongs to: its array's id, or its own."""
    array_id = record.get("array_job_id") or 0
    return str(array_id or record.get("job_id"))


def dbd_key(record: Mapping[str, Any]) -> str:
    array_id = (record.get("array") or {}).get("job_id") or 0
    return str(array_id or record.get("job_id"))


def dbd_comment(record: Mapping[str, Any]) -> str | None:
    comment = record.get("comment")
    if isinstance(comment, Mapping):
        value = comment.get("job")
        return str(value) if value else None
    return str(comment) if comment else None


def group_ctld(
    records: Iterable[Mapping[str, Any]],
) -> dict[str, list[Mapping[str, Any]]]:
    """slurmctld records keyed by backend id (an array's tasks together)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        out.setdefault(array_key(record), []).append(record)
    return out


def group_dbd(
    records: Iterable[Mapping[str, Any]],
) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        out.setdefault(dbd_key(record), []).append(record)
    return out


def belongs_to(records: Sequence[Mapping[str, Any]], comment: str, *, dbd: bool) -> bool:
    """Do these records carry the portal job's comment? (Guards against reused Slurm ids.)
    Accounting without job comments stored (no AccountingStoreFlags=job_comment) is trusted."""
    for record in records:
        value = dbd_comment(record) if dbd else (record.get("comment") or None)
        if value is None and dbd:
            continue
        if value != comment:
            return False
    return True


def _reason(raw: Any, fallback: str) -> str:
    text = str(raw or "")
    return fallback if text in QUIET_REASONS else text


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


def status_from_ctld(backend_id: str, records: Sequence[Mapping[str, Any]]) -> JobStatus:
    """The status of a job (or array) from its slurmctld records."""
    parts = []
    for record in records:
        state, default_reason = portal_state(str(record.get("job_state") or ""))
        final = state not in ("queued", "running")
        exit_code = ctld_exit_code(record) if final else None
        reason = _reason(record.get("state_reason"), default_reason)
        if state == "queued" and reason:
            reason = f"waiting: {reason}"
        parts.append(
            (
                state,
                exit_code,
                ts(record.get("start_time")) if state != "queued" else None,
                ts(record.get("end_time")) if final else None,
                reason if final or state == "queued" else "",
            )
        )
    return _fold(backend_id, parts)


def status_from_dbd(backend_id: str, records: Sequence[Mapping[str, Any]]) -> JobStatus:
    """The status of a job (or array) that slurmctld forgot, from its accounting records."""
    parts = []
    for record in records:
        slurm_state = str((record.get("state") or {}).get("current") or "")
        state, default_reason = portal_state(slurm_state)
        final = state not in ("queued", "running")
        times = record.get("time") or {}
        reason = _reason((record.get("state") or {}).get("reason"), default_reason)
        exit_code = dbd_exit_code(record, state) if final else None
        if state == "failed" and exit_code is None:
            reason = "; ".join(filter(None, [reason, "exit code not recorded by accounting"]))
        parts.append(
            (
                state,
                exit_code,
                ts(times.get("start")) if state != "queued" else None,
                ts(times.get("end")) if final else None,
                reason if final else "",
            )
        )
    return _fold(backend_id, parts)


def usage_from_dbd(backend_id: str, records: Sequence[Mapping[str, Any]]) -> UsageRecord | None:
    """Accounting of a finished job (or array): run time (summed over tasks) x allocated TRES.
    None while any task has no final record yet (slurmdbd lags slurmctld a little)."""
    if not records:
        return None
    elapsed = 0
    starts, ends = [], []
    per_task: dict[str, int] = {}
    for record in records:
        state = str((record.get("state") or {}).get("current") or "")
        times = record.get("time") or {}
        if state not in FINAL_STATES or not times.get("end"):
            return None
        if isinstance(times.get("elapsed"), int):
            elapsed += max(0, times["elapsed"])
        if start := ts(times.get("start")):
            starts.append(start)
        if end := ts(times.get("end")):
            ends.append(end)
        tres = tres_list((record.get("tres") or {}).get("allocated") or ())
        for key, value in tres.items():
            per_task[key] = max(per_task.get(key, 0), value)
    return _usage_record(backend_id, elapsed, starts, ends, per_task, len(records), "slurmdbd")


def usage_from_ctld(backend_id: str, records: Sequence[Mapping[str, Any]]) -> UsageRecord | None:
    """Usage from slurmctld's records (end - start x tres_alloc_str) when accounting has no
    final record yet; None while any task is still active."""
    if not records:
        return None
    elapsed = 0
    starts, ends = [], []
    per_task: dict[str, int] = {}
    for record in records:
        state, _ = portal_state(str(record.get("job_state") or ""))
        if state in ("queued", "running"):
            return None
        start, end = ts(record.get("start_time")), ts(record.get("end_time"))
        if start and end and end >= start:
            elapsed += round((end - start).total_seconds())
            starts.append(start)
            ends.append(end)
        tres = parse_tres(str(record.get("tres_alloc_str") or ""))
        for key, value in tres.items():
            per_task[key] = max(per_task.get(key, 0), value)
    return _usage_record(
        backend_id,
        elapsed,
        starts,
        ends,
        per_task,
        len(records),
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


def dbd_direct_id(record: Mapping[str, Any]) -> str:
    """The id sacct shows for one accounting record: 123 for a job, 123_4 for task 4 of array
    123, 123+1 for component 1 of heterogeneous job 123. Each is recorded and charged on its
    own, so an array whose tasks end in different windows is never charged in part twice."""
    array = record.get("array") or {}
    array_id, task_id = array.get("job_id") or 0, array.get("task_id")
    if array_id and isinstance(task_id, int):
        return f"{array_id}_{task_id}"
    het = record.get("het") or {}
    het_id, offset = het.get("job_id") or 0, het.get("job_offset")
    if het_id and isinstance(offset, int):
        return f"{het_id}+{offset}"
    return str(record.get("job_id"))


def direct_from_dbd(
    jobs: Iterable[Mapping[str, Any]], accounts: Collection[str]
) -> list[DirectRecord]:
    """The finished jobs among dbv0.0.38 accounting records that ran under one of `accounts`.

    Skipped: other accounts, jobs not ended yet (running, pending, requeued), and jobs that
    never started (cancelled while pending: nothing to charge). Portal-tagged jobs are kept
    with their tag (the service decides whether the tag is genuine)."""
    found: list[DirectRecord] = []
    for record in jobs:
        account = str(record.get("account") or "")
        if account not in accounts:
            continue
        slurm_state = str((record.get("state") or {}).get("current") or "")
        times = record.get("time") or {}
        if slurm_state.split(" ")[0] not in FINAL_STATES or not ts(times.get("end")):
            continue
        if not ts(times.get("start")):
            continue
        backend_id = dbd_direct_id(record)
        usage = usage_from_dbd(backend_id, [record])
        if usage is None:
            continue
        state, default_reason = portal_state(slurm_state)
        comment = dbd_comment(record) or ""
        limit = times.get("limit")
        found.append(
            DirectRecord(
                backend_id=backend_id,
                account=account,
                cluster_user=str(record.get("user") or ""),
                name=str(record.get("name") or "")[:128],
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
                        "slurm_job_id": record.get("job_id"),
                        "partition": str(record.get("partition") or ""),
                        "time_limit_minutes": limit if isinstance(limit, int) else None,
                    },
                ),
                exit_code=dbd_exit_code(record, state),
                submitted_at=ts(times.get("submission")),
                portal_uuid=comment.removeprefix(COMMENT_PREFIX)
                if comment.startswith(COMMENT_PREFIX)
                else "",
                portal_backend_id=dbd_key(record) if comment.startswith(COMMENT_PREFIX) else "",
                reason=_reason((record.get("state") or {}).get("reason"), default_reason),
            )
        )
    return found
