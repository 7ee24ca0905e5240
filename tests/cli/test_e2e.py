"""`gpuc` end to end: the CLI's main() against the real API served by live_server, a real
Celery worker (Redis broker) and beat thread, and a local-backend cluster running real scripts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from accounts.models import User
from accounts.services import api_token_create
from jobs.models import Job
from portal import cli
from portal.celery import app as celery_app
from quotas.models import Allocation, Cluster
from tests.cli.conftest import Gpuc

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def celery_worker(local: Cluster) -> Iterator[None]:
    """A real worker on the Redis broker, and a beat thread asking it to sync every 0.2 s."""
    from jobs.tasks import sync_all_clusters_task

    celery_app.control.purge()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.2):
            sync_all_clusters_task.delay()

    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
        ticker = threading.Thread(target=beat, daemon=True)
        ticker.start()
        yield
        stop.set()
        ticker.join()
    celery_app.control.purge()


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.sh"
    path.write_text(f"#!/bin/bash\n{body}\n")
    return path


def _wait_for_state(job: Job, states: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state in states:
            return
        time.sleep(0.1)
    raise AssertionError(f"job stayed {job.state}, expected one of {states}")


def test_login_stores_the_verified_token_and_whoami_lists_the_project(
    gpuc: Gpuc, config_file: Path, tenant: Any
) -> None:
    stored = json.loads(config_file.read_text())
    run = gpuc("whoami")

    assert run.code == 0
    assert stored["token"].startswith("gpuc_")
    assert run.out.startswith("alice <alice@uni.example>")
    assert f"vision-lab/folding  {tenant.project.uuid}" in run.out


def test_login_with_a_wrong_token_fails_and_keeps_the_old_login(
    gpuc: Gpuc, live_server: Any, config_file: Path
) -> None:
    before = config_file.read_text()

    run = gpuc("login", "--url", live_server.url, "--token", "gpuc_deadbeef_wrong")

    assert run.code == 1
    assert run.err.startswith("error: Invalid API token")
    assert config_file.read_text() == before


def test_balance_shows_the_projects_allocation(gpuc: Gpuc, local: Cluster) -> None:
    allocation = Allocation.objects.get(clusters=local)

    run = gpuc("balance", "--project", "vision-lab/folding")

    assert run.code == 0
    header, row = run.out.splitlines()
    assert header.split()[-4:] == ["CREDITED", "HELD", "CHARGED", "AVAILABLE"]
    assert row.startswith(f"{allocation.uuid}  Protein folding  local  ")
    assert row.split()[-4:] == ["1,000.00", "0.00", "0.00", "1,000.00"]


def test_estimate_shows_the_servers_cost_for_the_flags(
    gpuc: Gpuc, local: Cluster, tmp_path: Path
) -> None:
    script = _script(tmp_path, "echo hi")

    run = gpuc("estimate", script, "-p", "folding", "-c", "local", "--cpus", "2", "--time", "5m")

    assert run.code == 0
    assert "Estimated cost: 600.00 SU" in run.out  # 2 CPUs x 5 min x 1 SU/CPU-second
    assert "CPU-hour" in run.out


def test_a_job_runs_from_submit_to_results_and_is_charged(
    gpuc: Gpuc, local: Cluster, celery_worker: None, tmp_path: Path, tenant: Any
) -> None:
    script = _script(
        tmp_path,
        'echo "hello from $GPUC_JOB_NAME with $GREETING"\n'
        'echo "oops" >&2\n'
        'printf "weights" > "$GPUC_OUTPUT_DIR/model.bin"\n'
        "sleep 1.2\n"  # at 1 SU per CPU-second, a charge to see
        "exit 3",
    )

    run = gpuc(
        "submit", script, "-p", "vision-lab/folding", "-c", "local", "--name", "train",
        "--time", "2", "--env", "GREETING=hola", "--wait", "--interval", "0.2",
    )  # fmt: skip

    assert run.code == 3  # the job's own exit code
    job = Job.objects.get()
    assert run.out == "hello from train with hola\n"  # streamed while it ran
    assert f"{job.uuid}: failed (exit 3)" in run.err
    assert job.state == Job.State.FAILED
    assert job.exit_code == 3
    short = str(job.uuid)[:8]  # as the portal's pages show it

    logs = gpuc("logs", short)
    assert (logs.code, logs.out) == (0, "hello from train with hola\n")
    assert gpuc("logs", job.uuid, "--stream", "stderr").out == "oops\n"

    status = gpuc("status", short)
    assert status.code == 0
    assert "State:      failed" in status.out
    assert "Exit code:  3" in status.out
    assert "-> pending" in status.out and "-> failed" in status.out

    listing = gpuc("results", job.uuid)
    assert listing.code == 0 and "model.bin" in listing.out
    download = gpuc("results", "get", job.uuid, "model.bin", "-o", tmp_path / "got.bin")
    assert download.code == 0
    assert (tmp_path / "got.bin").read_bytes() == b"weights"

    jobs = gpuc("ls", "--json")
    assert [j["name"] for j in json.loads(jobs.out)] == ["train"]

    _wait_for_state(job, {Job.State.FAILED})
    deadline = time.monotonic() + 30
    while job.finalized_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
        job.refresh_from_db()
    balance = gpuc("balance", "--json")
    [allocation] = json.loads(balance.out)
    assert Decimal(allocation["held"]) == 0
    assert Decimal(allocation["charged"]) == job.charged_cost > 0
    assert Decimal(allocation["available"]) == 1000 - job.charged_cost


def test_logs_follow_streams_a_running_job_until_it_ends(
    gpuc: Gpuc, local: Cluster, celery_worker: None, tmp_path: Path
) -> None:
    script = _script(tmp_path, "for i in 1 2 3; do echo line $i; sleep 0.3; done")
    job_id = gpuc("submit", script, "-p", "folding", "-c", "local", "--time", "2").out.strip()

    run = gpuc("logs", job_id, "-f", "--interval", "0.1")

    assert run.code == 0
    assert run.out == "line 1\nline 2\nline 3\n"
    assert Job.objects.get(uuid=job_id).state == Job.State.COMPLETED


def test_cancel_stops_a_running_job(
    gpuc: Gpuc, local: Cluster, celery_worker: None, tmp_path: Path
) -> None:
    script = _script(tmp_path, "echo started; sleep 60")
    job_id = gpuc("submit", script, "-p", "folding", "-c", "local", "--time", "5").out.strip()
    job = Job.objects.get(uuid=job_id)
    _wait_for_state(job, {Job.State.RUNNING})

    run = gpuc("cancel", job_id)

    assert run.code == 0
    assert run.out.startswith(f"{job_id}: ")
    _wait_for_state(job, {Job.State.CANCELLED})
    assert "State:      cancelled" in gpuc("status", job_id).out


def test_ls_filters_by_state_and_follows_pages(
    gpuc: Gpuc, local: Cluster, tmp_path: Path, tenant: Any
) -> None:
    script = _script(tmp_path, "echo hi")
    ids = [
        gpuc(
            "submit", script, "-p", "folding", "-c", "local", "-t", "1", "--name", f"j{n}"
        ).out.strip()
        for n in range(5)
    ]
    Job.objects.filter(uuid=ids[0]).update(state=Job.State.COMPLETED)

    newest = gpuc("ls", "--limit", "3", "--json")
    pending = gpuc("ls", "--state", "pending", "--project", "folding", "--limit", "2")
    everything = gpuc("ls", "--limit", "100", "--json")

    assert [j["name"] for j in json.loads(newest.out)] == ["j4", "j3", "j2"]
    assert [line.split()[1] for line in pending.out.splitlines()[1:]] == ["j4", "j3"]
    assert len(json.loads(everything.out)) == 5
    assert "j0" not in pending.out


def test_submitting_beyond_the_allocation_exits_4_and_creates_nothing(
    gpuc: Gpuc, local: Cluster, tmp_path: Path
) -> None:
    script = _script(tmp_path, "echo hi")

    run = gpuc("submit", script, "-p", "folding", "-c", "local", "--cpus", "4", "--time", "5")

    assert run.code == cli.EXIT_QUOTA
    assert run.out == ""
    assert run.err.startswith("error: Insufficient quota")
    assert not Job.objects.exists()
    allocation = Allocation.objects.get(clusters=local)
    assert allocation.held == 0


def test_submitting_with_a_gpuc_variable_is_refused_by_the_server_naming_it(
    gpuc: Gpuc, local: Cluster, tmp_path: Path
) -> None:
    script = _script(tmp_path, "echo hi")

    run = gpuc(
        "submit", script, "-p", "folding", "-c", "local", "--time", "1",
        "--env", "GPUC_SESSION_PORT=8888",
    )  # fmt: skip

    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith(
        "error: env name GPUC_SESSION_PORT is reserved: names starting with GPUC_ are set by "
        "the portal"
    )
    assert not Job.objects.exists()


def test_the_same_idempotency_key_returns_the_same_job(
    gpuc: Gpuc, local: Cluster, tmp_path: Path
) -> None:
    script = _script(tmp_path, "echo hi")
    argv = ("submit", script, "-p", "folding", "-c", "local", "-t", "1", "--idempotency-key", "k1")

    first, second = gpuc(*argv), gpuc(*argv)

    assert first.code == second.code == 0
    assert first.out == second.out
    assert Job.objects.count() == 1


def test_another_tenants_job_is_not_found(
    gpuc: Gpuc, local: Cluster, tmp_path: Path, mallory: User, mallory_tenant: Any, monkeypatch
) -> None:
    script = _script(tmp_path, "echo hi")
    job_id = gpuc("submit", script, "-p", "folding", "-c", "local", "-t", "1").out.strip()
    _, raw = api_token_create(actor=mallory, name="cli")
    monkeypatch.setenv("GPUC_TOKEN", raw)

    for command in ("status", "cancel", "logs", "results"):
        run = gpuc(command, job_id)
        assert (run.code, run.out, run.err) == (1, "", "error: No such job\n"), command
        run = gpuc(command, job_id[:8])
        assert run.code == 1, command
        assert run.err.startswith("error: No such job: none of your jobs"), command
    assert Job.objects.get().state == Job.State.PENDING


def test_a_short_id_names_a_job_and_an_ambiguous_one_lists_the_candidates(
    gpuc: Gpuc, local: Cluster, tmp_path: Path
) -> None:
    script = _script(tmp_path, "echo hi")
    ids = [
        gpuc(
            "submit", script, "-p", "folding", "-c", "local", "-t", "1", "--name", f"j{n}"
        ).out.strip()
        for n in range(3)
    ]
    chosen = [
        "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11",
        "5b0e7a3c-9d01-4c2e-8f00-000000000002",
        "0d6a1c1e-8c1e-4b7a-9f43-7d8f2b6c5a90",
    ]
    for job_id, uuid in zip(ids, chosen, strict=True):
        Job.objects.filter(uuid=job_id).update(uuid=uuid)

    ambiguous = gpuc("cancel", "5b0e7a3c")
    assert ambiguous.code == 1
    assert "is ambiguous: 2 of your jobs start with it" in ambiguous.err
    assert [line.split()[:2] for line in ambiguous.err.splitlines()[1:]] == [
        [chosen[1], "j1"],
        [chosen[0], "j0"],
    ]
    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.PENDING}

    cancelled = gpuc("cancel", "5b0e7a3c-4")
    assert cancelled.code == 0
    assert cancelled.out.startswith(f"{chosen[0]}: ")
    assert Job.objects.get(uuid=chosen[0]).state == Job.State.CANCELLED
    assert "Job:        j2" in gpuc("status", "0d6a1c1e").out
    listing = gpuc("ls").out.splitlines()[1:]
    assert [line.split()[0] for line in listing] == ["0d6a1c1e", "5b0e7a3c-9", "5b0e7a3c-4"]


def test_after_login_the_only_project_and_cluster_are_the_defaults_for_submit_wait(
    gpuc: Gpuc, live_server: Any, local: Cluster, celery_worker: None, tmp_path: Path, alice: User
) -> None:
    _, raw = api_token_create(actor=alice, name="again")
    login = gpuc("login", "--url", live_server.url, "--token", raw)
    assert login.code == 0
    assert "Default project: vision-lab/folding" in login.out
    assert "Default cluster: local" in login.out
    script = _script(tmp_path, "for i in 1 2 3; do echo step $i; sleep 0.3; done")

    run = gpuc("submit", script, "-t", "2", "--wait", "--interval", "0.1")

    assert (run.code, run.out) == (0, "step 1\nstep 2\nstep 3\n")
    job = Job.objects.get()
    assert (job.project.slug, job.cluster.name) == ("folding", "local")
    assert f"{job.uuid}: completed" in run.err


def test_clusters_shows_each_clusters_limits_from_the_api(gpuc: Gpuc, local: Cluster) -> None:
    local.options = {
        **local.options,
        "max_gpus": 4,
        "max_cpus": 2,
        "max_memory_mb": 16000,
        "max_time_minutes": 1440,
    }
    local.save()

    run = gpuc("clusters")

    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[lines.index("local  (local; GPU types: -)") + 1] == (
        "  limits per job: 4 GPUs, 2 CPUs, 16000M memory, 1d time"
    )
    assert "root" not in run.out  # options a user may not see stay hidden
