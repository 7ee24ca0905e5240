"""The local backend end to end: real bash subprocesses in per-job directories."""

from __future__ import annotations

import time
from decimal import Decimal
from http import HTTPStatus

import pytest

from jobs.models import Job
from jobs.services import cluster_sync, job_forward
from quotas.models import Hold


@pytest.fixture
def local_body(tenant, local_cluster):
    return {
        "project": str(tenant.project.uuid),
        "cluster": "local",
        "name": "local-job",
        "gpus": 0,
        "cpus": 1,
        "memory_mb": 256,
        "time_limit_minutes": 5,
    }


def _submit_and_forward(api, body, script: str, **extra) -> Job:
    response = api.post("/api/v1/jobs/", {**body, "script": script, **extra}, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.json()
    job = Job.objects.get(uuid=response.json()["id"])
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    return job


def _sync_until(job: Job, cluster, states, timeout: float = 30.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster_sync(cluster=cluster)
        job.refresh_from_db()
        if job.state in states and (job.is_active or job.finalized_at is not None):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job stayed {job.state}")


def test_a_local_job_logs_what_it_printed_and_its_result_downloads_with_the_right_bytes(
    api_alice, local_body, local_cluster, tenant
):
    script = (
        "#!/bin/bash\n"
        'echo "hello from $GPUC_JOB_NAME with $GREETING"\n'
        'printf "result bytes \\x01\\x02\\n" > "$GPUC_OUTPUT_DIR/result.txt"\n'
        'mkdir -p "$GPUC_OUTPUT_DIR/sub" && echo nested > "$GPUC_OUTPUT_DIR/sub/n.txt"\n'
        "sleep 2\n"
    )
    job = _submit_and_forward(api_alice, local_body, script, env={"GREETING": "a $(shell)"})
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)

    assert job.state == Job.State.COMPLETED
    assert job.exit_code == 0
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/?stream=stdout&offset=0").json()
    assert log["data"] == "hello from local-job with a $(shell)\n"
    assert log["eof"] is True
    listing = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    assert [(f["path"], f["size"]) for f in listing] == [("result.txt", 16), ("sub/n.txt", 7)]
    download = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/result.txt")
    assert download.status_code == HTTPStatus.OK
    assert b"".join(download.streaming_content) == b"result bytes \x01\x02\n"
    assert "attachment" in download["Content-Disposition"]
    # 1 CPU at 1 SU per CPU-second: the charge is the elapsed time, within a second of reality.
    wall = (job.ended_at - job.started_at).total_seconds()
    assert job.elapsed_seconds >= 2
    assert abs(job.charged_cost - Decimal(wall)) <= 1
    assert job.charged_cost == Decimal(job.elapsed_seconds)
    hold = Hold.objects.get(pk=job.hold_id)
    assert hold.state == Hold.State.SETTLED
    assert hold.released == hold.amount - job.charged_cost


def test_a_local_script_exiting_3_is_failed_with_exit_code_3(api_alice, local_body, local_cluster):
    job = _submit_and_forward(api_alice, local_body, "echo oops >&2\nexit 3\n")
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    assert job.state == Job.State.FAILED
    assert job.exit_code == 3
    err = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/?stream=stderr").json()
    assert err["data"] == "oops\n"


def test_a_local_job_past_its_time_limit_is_killed_as_timeout(api_alice, local_body, local_cluster):
    local_cluster.options = {**local_cluster.options, "time_limit_scale": 1 / 30}
    local_cluster.save()  # 1 minute of limit = 2 seconds
    job = _submit_and_forward(
        api_alice, local_body, "echo start\nsleep 60\necho never\n", time_limit_minutes=1
    )
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    assert job.state == Job.State.TIMEOUT
    assert 2 <= job.elapsed_seconds <= 6
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "start\n"


def test_cancelling_a_running_local_job_stops_it_and_charges_its_run_time(
    api_alice, local_body, local_cluster
):
    job = _submit_and_forward(api_alice, local_body, "echo started\nsleep 120\n")
    job = _sync_until(job, local_cluster, [Job.State.RUNNING])
    time.sleep(1.5)
    response = api_alice.post(f"/api/v1/jobs/{job.uuid}/cancel/")
    assert response.status_code == HTTPStatus.ACCEPTED
    job = _sync_until(job, local_cluster, Job.FINAL_STATES, timeout=15)
    assert job.state == Job.State.CANCELLED
    assert 1 <= job.elapsed_seconds <= 10
    assert job.charged_cost == Decimal(job.elapsed_seconds)


def test_results_refuse_symlinks_escaping_the_output_directory(
    api_alice, local_body, local_cluster
):
    script = (
        'cd "$GPUC_OUTPUT_DIR"\n'
        "ln -s /etc/passwd leak\n"
        "ln -s .. up\n"
        "echo fine > ok.txt\n"
        "ln -s ok.txt alias.txt\n"
    )
    job = _submit_and_forward(api_alice, local_body, script)
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    listing = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    assert sorted(f["path"] for f in listing) == ["alias.txt", "ok.txt"]
    for path in ["leak", "up/spec.json", "up/script.sh"]:
        response = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/{path}")
        assert response.status_code == HTTPStatus.BAD_REQUEST, path
        assert response.json()["field"] == "path"
    alias = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/alias.txt")
    assert b"".join(alias.streaming_content) == b"fine\n"


def test_a_large_log_is_read_from_the_end_by_a_negative_offset(
    api_alice, local_body, local_cluster
):
    script = "head -c 3000000 /dev/zero | tr '\\0' 'a'\necho\necho THE-END\n"
    job = _submit_and_forward(api_alice, local_body, script)
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    tail = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/?offset=-8").json()
    assert tail == {"data": "THE-END\n", "next_offset": 3000009, "eof": True}
    first = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/?offset=0&limit=1000").json()
    assert (len(first["data"]), first["next_offset"], first["eof"]) == (1000, 1000, False)
