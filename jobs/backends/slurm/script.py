"""The batch script the portal hands to Slurm, and the job's environment.

Slurm neither creates a job's working directory nor the directories of its output files (a
missing one fails the launch), and the portal cannot create them: in production it does not run
as the job's user. So Slurm's own stdout/stderr go to /dev/null and a short bash wrapper, running
as the job's user, makes <workdir>/output, enters <workdir>, sends its output to stdout.log and
stderr.log there, writes the submitted script (base64 in the wrapper, so any bytes and any
interpreter survive) to <workdir>/script and execs it, so Slurm's signals (time limit, cancel)
reach the user's process directly.

Exit code 111 means the wrapper could not create or enter the job directory.
"""

from __future__ import annotations

import base64
import shlex
import textwrap
from collections.abc import Mapping

from jobs.backends.base import JobSpec

WRAPPER_EXIT_NO_DIR = 111
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def user_script(spec: JobSpec) -> str:
    """The script the user asked for: `#!/bin/bash` prepended when it has no interpreter line;
    a command (argv) becomes `exec <argv>`."""
    if not spec.script.strip() and spec.command:
        return "#!/bin/bash\nexec " + shlex.join(spec.command) + "\n"
    script = spec.script
    if not script.startswith("#!"):
        script = "#!/bin/bash\n" + script
    return script


def wrapper(spec: JobSpec, workdir: str) -> str:
    """The batch script: make and enter the job directory, redirect, run the user's script."""
    payload = base64.b64encode(user_script(spec).encode("utf-8", "surrogatepass")).decode()
    lines = "\n".join(textwrap.wrap(payload, 76)) if payload else ""
    quoted = shlex.quote(workdir)
    return (
        "#!/bin/bash\n"
        f"# GPU Commons job {spec.uuid}: the portal's wrapper around the submitted script.\n"
        f"GPUC_JOB_DIR={quoted}\n"
        'if ! mkdir -p -- "$GPUC_JOB_DIR/output" || ! cd -- "$GPUC_JOB_DIR"; then\n'
        f"    exit {WRAPPER_EXIT_NO_DIR}\n"
        "fi\n"
        "exec >>stdout.log 2>>stderr.log\n"
        'home=$(getent passwd "$(id -u)" | cut -d: -f6) && [ -n "$home" ] && export HOME="$home"\n'
        'tmp=".script.${SLURM_JOB_ID:-$$}"\n'
        "base64 -d >\"$tmp\" <<'GPUC_SCRIPT_END'\n"
        f"{lines}\n"
        "GPUC_SCRIPT_END\n"
        'chmod 0700 -- "$tmp" && mv -f -- "$tmp" script || exit 112\n'
        "exec ./script\n"
    )


def environment(
    spec: JobSpec, workdir: str, *, home: str, path: str = DEFAULT_PATH, project_dir: str = ""
) -> dict[str, str]:
    """The job's environment (slurmrestd requires one): a minimal login-like base, the
    user's variables, then the portal's GPUC_* (which the user cannot override)."""
    env = {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "USER": spec.cluster_user}
    env.update({str(k): str(v) for k, v in spec.env.items()})
    env.update(
        {
            "GPUC_JOB_UUID": str(spec.uuid),
            "GPUC_JOB_NAME": spec.name,
            "GPUC_JOB_DIR": workdir,
            "GPUC_OUTPUT_DIR": f"{workdir}/output",
            "GPUC_GPUS": str(spec.gpus),
            "GPUC_CPUS": str(spec.cpus),
        }
    )
    if project_dir:
        env["GPUC_PROJECT_DIR"] = project_dir
    return env


def job_properties(
    spec: JobSpec,
    workdir: str,
    *,
    partition: str,
    account: str,
    env: Mapping[str, str],
) -> dict[str, object]:
    """The `job` object of POST job/submit in the neutral form ApiVersion.job_description
    shapes for the version spoken (v0.0.38's names and plain values; GPUs as "gpus")."""
    job: dict[str, object] = {
        "name": spec.name,
        "comment": f"gpuc:{spec.uuid}",
        "tasks": 1,
        "cpus_per_task": spec.cpus,
        # Always explicit: without it a job is given the whole node's memory.
        "memory_per_node": spec.memory_mb,
        "time_limit": spec.time_limit_minutes,
        "current_working_directory": workdir,
        "standard_input": "/dev/null",
        "standard_output": "/dev/null",
        "standard_error": "/dev/null",
        "environment": dict(env),
    }
    if partition:
        job["partition"] = partition
    if account:
        job["account"] = account
    if spec.gpus:
        job["gpus"] = (spec.gpu_type, spec.gpus)
    if spec.array:
        job["array"] = spec.array
    return job
