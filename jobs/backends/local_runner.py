"""Supervisor of one local-backend job, started by LocalBackend.submit as
`python local_runner.py <jobdir>` (run by path: no Django, standard library only).

It detaches (fork + setsid), runs `bash script.sh` once per array task in the job directory
with the job's environment, enforces the time limit per task by killing the task's process
group, and records everything in <jobdir>/status.json (written atomically) so that any
process can poll it: state, runner_pid, pid, started_at, ended_at, exit_code, tasks_run.
A file <jobdir>/cancel asks it to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

KILL_GRACE_SECONDS = 3.0


def write_status(jobdir: Path, **fields: object) -> None:
    path = jobdir / "status.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current.update(fields)
    tmp = jobdir / f".status.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(current))
    os.replace(tmp, path)


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


def run(jobdir: Path) -> None:
    spec = json.loads((jobdir / "spec.json").read_text())
    cancel_file = jobdir / "cancel"
    write_status(jobdir, state="queued", runner_pid=os.getpid())
    if cancel_file.exists():
        write_status(jobdir, state="cancelled", ended_at=time.time(), exit_code=None)
        return
    limit = float(spec["time_limit_seconds"])
    indices = spec.get("array_indices") or [None]
    started = time.time()
    write_status(jobdir, state="running", started_at=started)
    state, tasks_run = "completed", 0
    exit_code: int | None = 0  # None when the time limit killed the task
    with (
        open(jobdir / "stdout.log", "ab", buffering=0) as out,
        open(jobdir / "stderr.log", "ab", buffering=0) as err,
    ):
        for index in indices:
            if cancel_file.exists():
                state = "cancelled"
                break
            env = dict(spec["env"])
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
            write_status(jobdir, pid=proc.pid)
            if cancel_file.exists():
                stop(proc)
                state = "cancelled"
                break
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                stop(proc)
                state, exit_code = "timeout", None
                break
            kill_group(proc.pid, signal.SIGKILL)  # leftovers the script put in the background
            if cancel_file.exists():
                state = "cancelled"
                exit_code = rc if rc >= 0 else 128 - rc
                break
            if rc != 0 and state == "completed":
                state, exit_code = "failed", rc if rc >= 0 else 128 - rc
    write_status(
        jobdir, state=state, exit_code=exit_code, ended_at=time.time(), tasks_run=tasks_run
    )


def main(argv: list[str]) -> int:
    jobdir = Path(argv[1]).resolve()
    if os.fork() > 0:
        return 0  # the submitter waits for this parent only; the child runs on, detached
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        run(jobdir)
    except Exception as exc:  # the job must end in a state, whatever went wrong
        write_status(
            jobdir, state="node_fail", ended_at=time.time(), reason=f"runner failed: {exc}"
        )
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
