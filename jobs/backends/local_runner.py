"""Supervisor of one local-backend job, started by LocalBackend.submit as
`python local_runner.py <root> <uuid>` with {"spec": <the job's spec, signed by the portal>,
"key": <this job's record key>} (JSON) on its stdin and a clean environment (run by path: no
Django, standard library only).

Once it has read the whole spec it writes <root>/.records/<uuid>.spec.json, detaches (fork +
setsid), runs `bash script.sh` once per array task in the job's folder <root>/<uuid>/ with the
job's environment (the spec's, nothing inherited), enforces the time limit per task by killing
the task's process group, and records everything in <root>/.records/<uuid>.status.json
(written atomically, outside the job's folder) so that any process can poll it: state,
runner_pid, pid, started_at, ended_at, exit_code, tasks_run. The times are its own clock
readings, never anything the job wrote, and every status is signed with the record key (an
HMAC the portal checks), which exists only in this process's memory: it came through a pipe,
never a file or the environment, and the process is made non-dumpable, so the job (running as
the same Unix user, but not root) cannot read it from /proc. A file
<root>/.records/<uuid>.cancel asks it to stop; it is looked for every second.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KILL_GRACE_SECONDS = 3.0
CANCEL_CHECK_SECONDS = 1.0
PR_SET_DUMPABLE = 4


def sign(key: str, value: dict[str, Any]) -> str:
    """The HMAC-SHA256 of a record (without its signature) under `key`; the portal
    (jobs.backends.local) signs and checks with this same function."""
    body = json.dumps(
        {k: v for k, v in value.items() if k != "signature"}, sort_keys=True, separators=(",", ":")
    )
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def no_dumps() -> None:
    """Keep same-user processes (the job) out of this process's memory (best effort, Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


class Records:
    """This job's records in <root>/.records/; the status is kept in memory and rewritten
    whole, so nothing the job may have put in the file is ever read back."""

    def __init__(self, root: Path, uuid: str, key: str) -> None:
        self.folder = root / ".records"
        self.uuid = uuid
        self.key = key
        self.status: dict[str, Any] = {}

    def path(self, kind: str) -> Path:
        return self.folder / f"{self.uuid}.{kind}"

    def write(self, kind: str, value: dict[str, Any]) -> None:
        tmp = self.folder / f".{self.uuid}.{kind}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle)
        os.replace(tmp, self.path(f"{kind}.json"))

    def update(self, **fields: object) -> None:
        self.status.update(fields)
        self.write("status", {**self.status, "signature": sign(self.key, self.status)})

    def cancelled(self) -> bool:
        return self.path("cancel").exists()


def kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the task's process group, then SIGKILL what is left after a grace period."""
    kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_SECONDS)
    kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def wait(proc: subprocess.Popen[bytes], records: Records, *, deadline: float) -> int | None:
    """The task's exit status; None when it ran past `deadline` and was stopped. A cancel
    request stops it at once (its status is then that of the stopped process)."""
    while True:
        try:
            return proc.wait(
                timeout=max(0.0, min(CANCEL_CHECK_SECONDS, deadline - time.monotonic()))
            )
        except subprocess.TimeoutExpired:
            pass
        if records.cancelled():
            stop(proc)
            return proc.returncode
        if time.monotonic() >= deadline:
            stop(proc)
            return None


def run(records: Records, jobdir: Path, spec: dict[str, Any]) -> None:
    records.update(state="queued", runner_pid=os.getpid())
    if records.cancelled():
        records.update(state="cancelled", ended_at=time.time(), exit_code=None)
        return
    limit = float(spec["time_limit_seconds"])
    indices = spec.get("array_indices") or [None]
    started = time.time()
    records.update(state="running", started_at=started)
    state, tasks_run = "completed", 0
    exit_code: int | None = 0  # None when the time limit killed the task
    with (
        open(jobdir / "stdout.log", "ab", buffering=0) as out,
        open(jobdir / "stderr.log", "ab", buffering=0) as err,
    ):
        for index in indices:
            if records.cancelled():
                state = "cancelled"
                break
            env = {str(k): str(v) for k, v in dict(spec["env"]).items()}
            if index is not None:
                env["GPUC_ARRAY_TASK_ID"] = env["SLURM_ARRAY_TASK_ID"] = str(index)
            proc = subprocess.Popen(  # noqa: S603 (fixed argv; the script is a file, not a shell string)
                ["/bin/bash", str(jobdir / "script.sh")],
                cwd=jobdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            tasks_run += 1
            records.update(pid=proc.pid)
            if records.cancelled():
                stop(proc)
                state = "cancelled"
                break
            rc = wait(proc, records, deadline=time.monotonic() + limit)
            if rc is None:
                state, exit_code = "timeout", None
                break
            kill_group(proc.pid, signal.SIGKILL)  # leftovers the script put in the background
            if records.cancelled():
                state = "cancelled"
                exit_code = rc if rc >= 0 else 128 - rc
                break
            if rc != 0 and state == "completed":
                state, exit_code = "failed", rc if rc >= 0 else 128 - rc
    records.update(state=state, exit_code=exit_code, ended_at=time.time(), tasks_run=tasks_run)


def main(argv: list[str]) -> int:
    no_dumps()
    root, uuid = Path(argv[1]), argv[2]
    try:
        message = json.loads(sys.stdin.buffer.read())
        spec, key = message["spec"], message["key"]
    except (ValueError, TypeError, KeyError):
        return 1  # the submitter died half-way: nothing is recorded, it will try again
    if not isinstance(spec, dict) or spec.get("uuid") != uuid or not isinstance(key, str):
        return 1
    records = Records(root, uuid, key)
    records.write("spec", spec)
    if os.fork() > 0:
        return 0  # the submitter waits for this parent only; the child runs on, detached
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        run(records, root / uuid, spec)
    except Exception as exc:  # the job must end in a state, whatever went wrong
        records.update(state="node_fail", ended_at=time.time(), reason=f"runner failed: {exc}")
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
