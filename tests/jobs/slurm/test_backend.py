"""The Slurm backend's parts that need no cluster: option checks, job checks, the wrapper
script, and reading Slurm's records (shapes as slurmrestd 22.05 answers them)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from jobs.backends.base import UNKNOWN, BackendError, JobRef, JobSpec
from jobs.backends.files import PathRefused
from jobs.backends.slurm import SlurmBackend, records, script
from jobs.backends.slurm.rest import is_transient

GOOD = {
    "url": "http://127.0.0.1:6820",
    "jwt_key_file": "/var/lib/gpucommons-slurm/jwt_hs256.key",
    "shared_root": "/var/lib/gpucommons-slurm/shared",
    "partition": "gpu",
    "gpu_types": ["h100"],
    "max_gpus": 4,
}


def spec(**fields) -> JobSpec:
    data = {
        "uuid": uuid.UUID("11111111-2222-4333-8444-555555555555"),
        "name": "train",
        "project": "folding",
        "cluster_user": "gpuc-test1",
        "script": "echo hi\n",
    }
    data.update(fields)
    return JobSpec(**data)


def test_valid_options_raise_no_problems():
    assert SlurmBackend.check_options(GOOD) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"url": "127.0.0.1:6820"}, "url must be slurmrestd's address"),
        ({"jwt_key_file": None}, "Give exactly one of jwt_key_file"),
        ({"jwt_key_env": "SLURM_KEY"}, "Give exactly one of jwt_key_file"),
        ({"jwt_key": "secret"}, "Never store the JWT key"),
        ({"jwt_key_file": "relative.key"}, "jwt_key_file must be an absolute path"),
        ({"query_user": "root"}, "never root"),
        ({"shared_root": "/srv/../etc"}, "shared_root must be an absolute path"),
        ({"shared_root": "/srv/sha'red"}, "shared_root must be an absolute path"),
        ({"shared_root": "/"}, "must not be the root directory"),
        ({"partitions": ["debug"]}, "partition gpu is not one of partitions"),
        ({"gpu_types": "h100"}, "gpu_types must be a list"),
        ({"max_gpus": 0}, "max_gpus must be a positive whole number"),
        ({"read_timeout": "30"}, "read_timeout must be a positive number"),
        ({"api_version": "v0.0.39"}, "api_version must be 'auto'"),
        ({"api_version": 38}, "api_version must be 'auto'"),
        ({"accounting": "yes"}, "accounting must be true"),
        ({"nodes": 3}, "Unknown Slurm options: nodes"),
    ],
)
def test_bad_options_are_named_in_a_sentence(change, words):
    options = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    problems = SlurmBackend.check_options(options)
    assert any(words in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"image": "busybox"}, "image"),
        ({"script": "", "command": ()}, "script"),
        ({"command": ("python", "x.py")}, "command"),
        ({"cluster_user": "root"}, "cluster"),
        ({"cluster_user": "slurm"}, "cluster"),
        ({"cluster_user": "../etc"}, "cluster"),
        ({"name": "a;rm -rf"}, "name"),
        ({"cpus": 0}, "cpus"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"time_limit_minutes": 0}, "time_limit_minutes"),
        ({"gpus": 1, "gpu_type": "h100:2"}, "gpu_type"),
    ],
)
def test_a_job_slurm_would_refuse_is_refused_before_anything_is_sent(fields, field):
    backend = SlurmBackend(name="slurm", options=GOOD)
    problems = backend.validate_spec(spec(**fields))
    assert [f for f, _ in problems][:1] == [field], problems


def test_submitting_as_root_is_refused_without_calling_slurm():
    backend = SlurmBackend(name="slurm", options={**GOOD, "url": "http://127.0.0.1:9"})
    with pytest.raises(BackendError, match="never run as 'root'"):
        backend.submit(spec(cluster_user="root"))


def test_the_wrapper_recreates_the_submitted_script_byte_for_byte_and_runs_it(tmp_path: Path):
    user_script = "#!/bin/bash\nprintf '%s\\n' \"héllo $GREETING\"\necho oops >&2\nexit 4\n"
    job = spec(script=user_script)
    workdir = tmp_path / "gpuc-test1" / "jobs" / str(job.uuid)
    wrapper = script.wrapper(job, str(workdir))
    env = {"PATH": "/usr/bin:/bin", "GREETING": "world", "SLURM_JOB_ID": "7"}

    done = subprocess.run(["/bin/bash", "-c", wrapper], env=env, timeout=30, check=False)  # noqa: S603

    assert done.returncode == 4
    assert (workdir / "script").read_text() == user_script
    assert (workdir / "stdout.log").read_text() == "héllo world\n"
    assert (workdir / "stderr.log").read_text() == "oops\n"
    assert (workdir / "output").is_dir()


def test_a_script_without_an_interpreter_line_runs_with_bash_and_a_command_is_execd():
    assert script.user_script(spec(script="echo hi\n")) == "#!/bin/bash\necho hi\n"
    assert script.user_script(spec(script="#!/usr/bin/env python3\n")).startswith("#!/usr/bin")
    command = script.user_script(spec(script="", command=("echo", "a b; rm -rf /")))
    assert command == "#!/bin/bash\nexec echo 'a b; rm -rf /'\n"


def test_the_submitted_job_always_states_memory_and_its_gpus():
    job = spec(gpus=2, gpu_type="h100", cpus=3, memory_mb=512, time_limit_minutes=7, array="0-3%2")
    env = script.environment(job, "/w", home="/h")
    props = script.job_properties(job, "/w", partition="gpu", account="", env=env)
    assert props["memory_per_node"] == 512
    assert props["gpus"] == ("h100", 2)
    assert props["cpus_per_task"] == 3
    assert props["time_limit"] == 7
    assert props["array"] == "0-3%2"
    assert props["comment"] == f"gpuc:{job.uuid}"
    assert "account" not in props
    assert props["standard_output"] == "/dev/null"
    assert env["GPUC_OUTPUT_DIR"] == "/w/output"
    assert {"PATH", "HOME"} <= set(env)


def test_the_user_cannot_override_the_portals_variables():
    env = script.environment(spec(env={"GPUC_OUTPUT_DIR": "/etc", "FOO": "1"}), "/w", home="/h")
    assert (env["GPUC_OUTPUT_DIR"], env["FOO"]) == ("/w/output", "1")


@pytest.mark.parametrize(
    ("raw", "code"), [(0, 0), (768, 3), (10752, 42), (9, 137), (15, 143), (None, None)]
)
def test_slurmctld_exit_codes_are_wait_statuses(raw, code):
    assert records.decode_wait_status(raw) == code


def test_a_launch_failure_has_no_exit_code():
    record = {"job_state": "FAILED", "state_reason": "JobLaunchFailure", "exit_code": 4021}
    status = records.status_from_ctld("5", [records.ctld_job(record)])
    assert (status.state, status.exit_code, status.reason) == ("failed", None, "JobLaunchFailure")


def test_accountings_exit_code_is_believed_only_where_slurm_2205_gets_it_right():
    success = {"status": "SUCCESS", "return_code": 0}
    signaled = {"status": "SIGNALED", "return_code": None, "signal": {"signal_id": 9}}

    def read(exit_code):
        return records.dbd_job({"job_id": 5, "exit_code": exit_code})

    assert records.dbd_exit_code(read(success), "completed") == 0
    assert records.dbd_exit_code(read(success), "failed") is None
    assert records.dbd_exit_code(read(signaled), "failed") == 137


@pytest.mark.parametrize(
    ("slurm", "portal"),
    [
        ("PENDING", "queued"),
        ("RUNNING", "running"),
        ("CONFIGURING", "running"),
        ("COMPLETING", "running"),
        ("COMPLETED", "completed"),
        ("FAILED", "failed"),
        ("OUT_OF_MEMORY", "failed"),
        ("CANCELLED", "cancelled"),
        ("PREEMPTED", "cancelled"),
        ("TIMEOUT", "timeout"),
        ("DEADLINE", "timeout"),
        ("NODE_FAIL", "node_fail"),
        ("BOOT_FAIL", "node_fail"),
        ("SOMETHING_NEW", "running"),
    ],
)
def test_slurm_states_map_to_portal_states(slurm, portal):
    assert records.portal_state(slurm)[0] == portal


def test_an_arrays_tasks_fold_into_one_state_and_their_run_times_add_up():
    def task(job_id, state, start, end, exit_code=0):
        return records.ctld_job(
            {
                "job_id": job_id,
                "array_job_id": 10,
                "job_state": state,
                "start_time": start,
                "end_time": end,
                "exit_code": exit_code,
                "state_reason": "None",
                "tres_alloc_str": "cpu=2,mem=1G,node=1,gres/gpu=1,gres/gpu:h100=1",
                "comment": "gpuc:x",
            }
        )

    running = [task(11, "COMPLETED", 100, 110), task(10, "RUNNING", 105, 0)]
    assert records.status_from_ctld("10", running).state == "running"
    assert records.usage_from_ctld("10", running) is None
    ended = [task(11, "COMPLETED", 100, 110), task(10, "FAILED", 105, 125, exit_code=256)]
    status = records.status_from_ctld("10", ended)
    assert (status.state, status.exit_code) == ("failed", 1)
    usage = records.usage_from_ctld("10", ended)
    assert (usage.elapsed_seconds, usage.cpus, usage.memory_mb, usage.gpus) == (30, 2, 1024, 1)
    assert usage.gpu_type == "h100"
    assert "slurmdbd had no final record" in usage.raw["source"]
    assert records.group_ctld(ended).keys() == {"10"}


def test_records_of_another_portal_job_are_not_taken_for_this_one():
    def ctld(comment):
        return [records.ctld_job({"job_id": 1, "comment": comment})]

    def dbd(comment):
        return [records.dbd_job({"job_id": 1, "comment": {"job": comment}})]

    assert records.belongs_to(ctld("gpuc:a"), "gpuc:a")
    assert not records.belongs_to(ctld("gpuc:b"), "gpuc:a")
    assert not records.belongs_to(ctld(""), "gpuc:a")
    assert not records.belongs_to(dbd("gpuc:b"), "gpuc:a")
    assert records.belongs_to(dbd(None), "gpuc:a")


def test_tres_strings_read_memory_in_megabytes():
    assert records.parse_tres("cpu=1,mem=8000M,gres/gpu=2") == {
        "cpu": 1,
        "mem": 8000,
        "gres/gpu": 2,
    }
    assert records.parse_tres("mem=1.5G")["mem"] == 1536


@pytest.mark.parametrize(
    ("errno", "transient"), [(1001, True), (5005, True), (-1, True), (2014, False), (2045, False)]
)
def test_slurm_errnos_that_mean_try_again_are_told_apart_from_refusals(errno, transient):
    assert is_transient(errno) is transient


def test_logs_and_results_are_never_read_through_a_symlink(tmp_path: Path):
    backend = SlurmBackend(
        name="slurm", options={**GOOD, "shared_root": "/cluster", "shared_mount": str(tmp_path)}
    )
    ref = JobRef(uuid=uuid.uuid4(), backend_id="5", cluster_user="gpuc-test1")
    jobdir = tmp_path / "gpuc-test1" / "jobs" / str(ref.uuid)
    (jobdir / "output" / "deep").mkdir(parents=True)
    (jobdir / "output" / "deep" / "r.txt").write_bytes(b"result")
    (jobdir / "stdout.log").write_bytes(b"0123456789")
    os.symlink("/etc/passwd", jobdir / "stderr.log")
    os.symlink("/etc", jobdir / "output" / "etc")
    os.symlink("/etc/hostname", jobdir / "output" / "hostname")
    os.mkfifo(jobdir / "output" / "fifo")

    assert backend.read_log(ref, "stdout", -4, 100).data == b"6789"
    assert backend.read_log(ref, "stdout", 2, 3).data == b"234"
    past = backend.read_log(ref, "stdout", 50, 10)
    assert (past.data, past.next_offset) == (b"", 10)
    with pytest.raises(PathRefused):
        backend.read_log(ref, "stderr", 0, 100)
    assert [(f.path, f.size) for f in backend.list_results(ref)] == [("deep/r.txt", 6)]
    assert backend.open_result(ref, "deep/r.txt").read() == b"result"
    for path in ("etc/passwd", "hostname", "fifo", "../stdout.log", "/etc/passwd"):
        with pytest.raises(BackendError):
            backend.open_result(ref, path)
    with pytest.raises(FileNotFoundError):
        backend.open_result(ref, "missing.txt")


class _AccountingDown(http.server.BaseHTTPRequestHandler):
    """slurmrestd whose slurmctld has forgotten every job and whose slurmdbd is down: the
    jobs listing is empty and the accounting query fails as 22.05 answers it (HTTP 500 and
    errno 7000, "Unable to connect to database")."""

    def do_GET(self) -> None:
        if self.path.startswith("/slurm/v0.0.38/jobs"):
            status, body = 200, {"jobs": [], "errors": []}
        else:
            status, body = 500, {"errors": [{"error_number": 7000, "error": "Unable to connect"}]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_with_accounting_down_a_job_slurmctld_forgot_is_unknown_not_missing(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(os.urandom(32))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AccountingDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = SlurmBackend(
            name="t",
            options={
                **GOOD,
                "url": f"http://127.0.0.1:{server.server_address[1]}",
                "jwt_key_file": str(key),
                "api_version": "v0.0.38",
            },
        )
        ref = JobRef(uuid=uuid.uuid4(), backend_id="42", cluster_user="gpuc-test1")

        statuses = backend.poll([ref])
    finally:
        server.shutdown()
        server.server_close()

    # Absent would mean "the cluster lost it" (ended after the grace period); UNKNOWN means
    # "cannot tell until accounting is back".
    assert statuses["42"].state == UNKNOWN
    assert "Accounting unavailable" in statuses["42"].reason
