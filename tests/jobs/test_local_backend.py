"""The local backend end to end: real bash subprocesses in per-job directories."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path

import pytest
from django.test import Client

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


def test_results_refuse_every_symlink_the_job_left_in_its_output(
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
    assert sorted(f["path"] for f in listing) == ["ok.txt"]
    for path in ["leak", "up/stdout.log", "up/script.sh", "alias.txt"]:
        response = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/{path}")
        assert response.status_code == HTTPStatus.BAD_REQUEST, path
        assert response.json()["field"] == "path"
    ok = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/ok.txt")
    assert b"".join(ok.streaming_content) == b"fine\n"


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


# --- a job cannot peek at another job's files or cheat on its charge ------------------------


def _records(local_cluster) -> Path:
    return Path(local_cluster.options["root"]) / ".records"


def test_a_job_linking_its_output_and_log_to_another_jobs_files_is_not_served_their_bytes(
    api_alice, local_body, local_cluster
):
    victim = _submit_and_forward(
        api_alice,
        local_body,
        'echo "VICTIM-LOG"\necho "VICTIM-RESULT" > "$GPUC_OUTPUT_DIR/secret.txt"\n',
    )
    victim = _sync_until(victim, local_cluster, Job.FINAL_STATES)
    victim_dir = Path(local_cluster.options["root"]) / str(victim.uuid)
    script = (
        'rm -rf "$GPUC_OUTPUT_DIR" && ln -s "$VICTIM/output" "$GPUC_OUTPUT_DIR"\n'
        'rm -f stdout.log && ln -s "$VICTIM/stdout.log" stdout.log\n'
    )
    cheat = _submit_and_forward(api_alice, local_body, script, env={"VICTIM": str(victim_dir)})
    cheat = _sync_until(cheat, local_cluster, Job.FINAL_STATES)
    assert (Path(local_cluster.options["root"]) / str(cheat.uuid) / "output").is_symlink()

    listing = api_alice.get(f"/api/v1/jobs/{cheat.uuid}/results/")
    download = api_alice.get(f"/api/v1/jobs/{cheat.uuid}/results/secret.txt")
    log = api_alice.get(f"/api/v1/jobs/{cheat.uuid}/log/?stream=stdout")

    assert listing.status_code == HTTPStatus.BAD_REQUEST
    assert "symbolic links are not followed" in listing.json()["detail"]
    assert download.status_code == HTTPStatus.BAD_REQUEST
    assert b"VICTIM" not in download.content
    assert log.status_code == HTTPStatus.BAD_REQUEST
    assert "VICTIM" not in log.content.decode()
    # The victim's own files are still served to it.
    own = api_alice.get(f"/api/v1/jobs/{victim.uuid}/log/").json()
    assert own["data"] == "VICTIM-LOG\n"


def test_a_results_folder_linked_to_the_root_answers_400_in_the_api_and_on_the_web(
    api_alice, local_body, local_cluster, alice
):
    job = _submit_and_forward(
        api_alice, local_body, 'rm -rf "$GPUC_OUTPUT_DIR" && ln -s / "$GPUC_OUTPUT_DIR"\n'
    )
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    web = Client()
    web.force_login(alice)

    api = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/")
    page = web.get(f"/jobs/{job.uuid}/results/")
    download = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/etc/passwd")

    assert api.status_code == HTTPStatus.BAD_REQUEST
    assert api.json()["detail"] == (
        "The job's results cannot be listed: output: symbolic links are not followed"
    )
    assert page.status_code == HTTPStatus.BAD_REQUEST
    assert "symbolic links are not followed" in page.content.decode()
    assert download.status_code == HTTPStatus.BAD_REQUEST
    assert b"root:" not in download.content


def test_a_job_rewriting_its_status_and_spec_files_is_still_charged_its_real_run_time(
    api_alice, local_body, local_cluster
):
    fake_status = '{"state": "completed", "exit_code": 0, "started_at": 5, "ended_at": 5}'
    fake_spec = '{"gpus": 0, "cpus": 0, "memory_mb": 0, "gpu_type": "", "time_limit_seconds": 0}'
    script = (
        f"echo '{fake_status}' > status.json\necho '{fake_spec}' > spec.json\n"
        f"echo '{fake_status}' > \"$GPUC_OUTPUT_DIR/status.json\"\nsleep 3\n"
    )
    job = _submit_and_forward(api_alice, local_body, script)
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)

    assert job.state == Job.State.COMPLETED
    assert job.elapsed_seconds >= 3
    assert job.ended_at >= job.started_at
    assert job.charged_cost == Decimal(job.elapsed_seconds)  # 1 SU per CPU-second


def test_a_record_forged_after_the_end_is_refused_and_charged_from_submission(
    api_alice, local_body, local_cluster
):
    # A job that finds its supervisor's record outside its folder and forges it after the end
    # (from a process it detached, with an end before the start) gains nothing: the record's
    # signature fails, so the portal charges it from its submission by its own clock.
    forged = '{"state": "completed", "exit_code": 0, "started_at": 2000000000, "ended_at": 1}'
    script = (
        "sleep 2\n"
        f"setsid bash -c 'touch detached; sleep 1; echo '\"'\"'{forged}'\"'\"' > "
        '"$GPUC_JOB_DIR/../.records/$GPUC_JOB_UUID.status.json"\' &\n'
        # Out of the job's process group before the job ends (the supervisor kills what is left)
        "until [ -e detached ]; do sleep 0.05; done\n"
    )
    job = _submit_and_forward(api_alice, local_body, script)
    status = _records(local_cluster) / f"{job.uuid}.status.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and '"ended_at": 1}' not in status.read_text():
        time.sleep(0.2)
    assert json.loads(status.read_text())["started_at"] == 2000000000  # the forgery landed

    job = _sync_until(job, local_cluster, Job.FINAL_STATES)

    assert job.state == Job.State.NODE_FAIL
    assert job.state_reason == "the job altered the records of its supervisor"
    assert job.ended_at >= job.started_at
    assert job.elapsed_seconds >= 3
    assert job.charged_cost == Decimal(job.elapsed_seconds)


def test_a_running_job_forging_a_short_finished_record_is_stopped_and_charged_from_submission(
    api_alice, local_body, local_cluster
):
    # Plausible times, "completed" after half a second, while the job runs on: without the
    # supervisor's signature the portal does not believe it, stops the job, and charges it.
    script = (
        "echo start\nsleep 2\nnow=$(date +%s)\n"
        'printf \'{"state": "completed", "exit_code": 0, "started_at": %s, "ended_at": %s}\' '
        '"$((now - 1))" "$now" > "$GPUC_JOB_DIR/../.records/$GPUC_JOB_UUID.status.json"\n'
        "sleep 30\necho never\n"
    )
    job = _submit_and_forward(api_alice, local_body, script)
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    record = _records(local_cluster) / f"{job.uuid}.status.json"
    deadline = time.monotonic() + 10  # the supervisor stops the job within seconds
    while time.monotonic() < deadline and '"cancelled"' not in record.read_text():
        time.sleep(0.2)

    assert job.state == Job.State.NODE_FAIL
    assert job.state_reason == "the job altered the records of its supervisor"
    assert 2 <= job.elapsed_seconds <= 15
    assert job.charged_cost == Decimal(job.elapsed_seconds)
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "start\n"
    final = json.loads(record.read_text())
    assert (final["state"], "signature" in final) == ("cancelled", True)  # by the supervisor


def test_a_job_sees_none_of_the_portals_environment(
    api_alice, local_body, local_cluster, monkeypatch
):
    secrets = {
        "SECRET_KEY": "portal-secret-key-value",
        "DATABASE_URL": "postgres://portal:db-password@db/portal",
        "CELERY_BROKER_URL": "redis://:broker-password@broker:6379/0",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    script = 'env\necho "--- parent"\ntr "\\0" "\\n" < /proc/$PPID/environ\n'
    job = _submit_and_forward(api_alice, local_body, script, env={"MINE": "kept"})
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)

    out = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()["data"]
    assert job.state == Job.State.COMPLETED
    assert "--- parent" in out
    assert "MINE=kept" in out
    assert f"HOME={Path(local_cluster.options['root']) / str(job.uuid)}" in out
    assert f"GPUC_JOB_UUID={job.uuid}" in out
    for name, value in secrets.items():
        assert name not in out
        assert value not in out
