"""Jobs on the real single-node Slurm through the portal API, end to end: submission, the
forwarding service, the sync loop (one slurmctld listing per tick), accounting from slurmdbd,
logs and results on the shared filesystem, cancel, outages and refusals."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest

from jobs.backends.base import BackendUnavailable, JobRef, JobSpec
from jobs.backends.slurm import SlurmBackend, records
from jobs.models import Job
from jobs.services import cluster_sync, job_forward
from quotas.models import Allocation, Cluster, Hold
from tests.jobs.slurm.conftest import (
    ALICE_UNIX,
    CPU_SU_PER_HOUR,
    GPU_SU_PER_HOUR,
    SlurmSite,
    both_slurms,
    sacct_field,
    slurm_jobs_tagged,
    slurm_number,
    sync_until,
)

pytestmark = pytest.mark.slurm

CPU_SU_PER_SECOND = CPU_SU_PER_HOUR / 3600
GPU_SU_PER_SECOND = GPU_SU_PER_HOUR / 3600


@pytest.fixture(scope="module")
def early_job(slurm_site: SlurmSite) -> tuple[uuid.UUID, str]:
    """A short Slurm job submitted when the module starts (straight through the backend, no
    portal job yet), so that slurmctld has forgotten it (MinJobAge) by the module's last test."""
    backend = SlurmBackend(name="early", options=slurm_site.options())
    spec = JobSpec(
        uuid=uuid.uuid4(),
        name="early",
        project="folding",
        cluster_user=ALICE_UNIX,
        script="echo early bird\n",
        memory_mb=128,
        time_limit_minutes=1,
    )
    return spec.uuid, backend.submit(spec)


@pytest.fixture(autouse=True)
def _start_early_job(early_job: tuple[uuid.UUID, str]) -> None:
    """Every test asks for early_job, so it is submitted before the first test runs."""


def body(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "project": "folding",
        "cluster": "slurm",
        "name": "train",
        "script": "echo hello\n",
        "cpus": 1,
        "memory_mb": 256,
        "time_limit_minutes": 2,
    }
    data.update(fields)
    return data


def submit(api, **fields: Any) -> Job:
    """POST /api/v1/jobs/ and hand the job to Slurm the way the forwarding task does."""
    response = api.post("/api/v1/jobs/", body(**fields), format="json")
    assert response.status_code == HTTPStatus.CREATED, response.json()
    job = Job.objects.get(uuid=response.json()["id"])
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED, (job.state, job.state_reason)
    return job


def run_seconds(job: Job) -> float:
    return (job.ended_at - job.started_at).total_seconds()


@both_slurms
def test_a_job_submitted_by_the_api_runs_prints_returns_results_and_is_charged_its_run_time(
    api_alice, slurm_cluster: Cluster, slurm_allocation: Allocation, slurm_site: SlurmSite
):
    job = submit(
        api_alice,
        script=(
            'echo "hello from $(id -un) in $PWD"\n'
            "echo warming up >&2\n"
            'printf "0.93\\n" > "$GPUC_OUTPUT_DIR/metrics.txt"\n'
            "mkdir -p output/plots && head -c 3000 /dev/zero | tr '\\0' x > output/plots/a.txt\n"
            "sleep 3\n"
        ),
    )
    slurm_allocation.refresh_from_db()
    assert job.estimated_cost == Decimal(120)  # 2 min x 1 CPU x 1 SU/s
    assert slurm_allocation.held == Decimal(120)
    [tagged] = slurm_jobs_tagged(slurm_site, job.uuid)
    assert str(tagged["job_id"]) == job.backend_id
    assert tagged["user_name"] == ALICE_UNIX
    assert slurm_number(tagged["memory_per_node"]) == 256

    sync_until(slurm_cluster, [job])

    slurm_allocation.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    assert job.exit_code == 0
    assert job.usage["source"] == "accounting"
    assert job.usage["backend_source"] in {
        "slurmdbd",
        "slurmctld job record (slurmdbd had no final record yet)",
    }
    assert 3 <= job.elapsed_seconds <= 10
    assert abs(job.elapsed_seconds - run_seconds(job)) <= 1
    assert job.charged_cost == job.elapsed_seconds * CPU_SU_PER_SECOND
    assert (slurm_allocation.held, slurm_allocation.charged) == (0, job.charged_cost)
    assert Hold.objects.get(pk=job.hold_id).state == Hold.State.SETTLED

    workdir = f"{slurm_site.shared_root}/{ALICE_UNIX}/jobs/{job.uuid}"
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log == {
        "data": f"hello from {ALICE_UNIX} in {workdir}\n",
        "next_offset": len(f"hello from {ALICE_UNIX} in {workdir}\n"),
        "eof": True,
    }
    err = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"stream": "stderr"}).json()
    assert err["data"] == "warming up\n"
    tail = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"offset": -5}).json()
    assert tail["data"] == workdir[-4:] + "\n"
    past = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"offset": 10_000})
    assert past.status_code == HTTPStatus.BAD_REQUEST
    assert past.json()["field"] == "offset"

    results = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    assert [(r["path"], r["size"]) for r in results] == [
        ("metrics.txt", 5),
        ("plots/a.txt", 3000),
    ]
    download = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/metrics.txt")
    assert download.status_code == HTTPStatus.OK
    assert b"".join(download.streaming_content) == b"0.93\n"
    nested = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/plots/a.txt")
    assert b"".join(nested.streaming_content) == b"x" * 3000
    escape = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/../stdout.log")
    assert escape.status_code in (HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND)


def test_a_symlink_the_job_leaves_in_its_output_is_neither_listed_nor_followed(
    api_alice, slurm_cluster, slurm_allocation
):
    job = submit(
        api_alice,
        script=(
            'ln -s /etc/shadow "$GPUC_OUTPUT_DIR/shadow"\n'
            'ln -s / "$GPUC_OUTPUT_DIR/root"\n'
            'echo fine > "$GPUC_OUTPUT_DIR/ok.txt"\n'
        ),
    )
    sync_until(slurm_cluster, [job])

    results = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    assert [r["path"] for r in results] == ["ok.txt"]
    for path in ("shadow", "root/etc/shadow"):
        response = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/{path}")
        assert response.status_code == HTTPStatus.BAD_REQUEST, path
        assert response.json()["field"] == "path"


@both_slurms
def test_a_script_exiting_3_ends_failed_with_exit_code_3(
    api_alice, slurm_cluster, slurm_allocation
):
    job = submit(api_alice, script="echo about to fail\nexit 3\n")

    sync_until(slurm_cluster, [job])

    slurm_allocation.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.exit_code == 3
    assert job.charged_cost == job.elapsed_seconds * CPU_SU_PER_SECOND
    assert slurm_allocation.held == 0
    assert job.events.filter(to_state=Job.State.FAILED, message__contains="exit code 3").exists()


def test_a_python_script_runs_with_its_own_interpreter_and_its_exit_code(
    api_alice, slurm_cluster, slurm_allocation
):
    job = submit(
        api_alice,
        script="#!/usr/bin/env python3\nimport os, sys\nprint(os.environ['GREETING'])\n"
        "sys.exit(7)\n",
        env={"GREETING": "hi from python"},
    )

    sync_until(slurm_cluster, [job])

    assert (job.state, job.exit_code) == (Job.State.FAILED, 7)
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "hi from python\n"


@both_slurms
def test_an_array_runs_every_task_and_is_charged_the_sum_of_their_run_times(
    api_alice, slurm_cluster, slurm_allocation, slurm_site
):
    job = submit(
        api_alice,
        array="0-2",
        script='echo "task $SLURM_ARRAY_TASK_ID" > "$GPUC_OUTPUT_DIR/task-$SLURM_ARRAY_TASK_ID"\n'
        "sleep 1\n",
    )
    assert job.estimated_cost == Decimal(360)  # 3 tasks x 2 min x 1 SU/s

    sync_until(slurm_cluster, [job])

    slurm_allocation.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    results = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    assert [r["path"] for r in results] == ["task-0", "task-1", "task-2"]
    # slurmdbd records array tasks asynchronously (it lags under load): wait for all three.
    deadline = time.monotonic() + 60
    while True:
        raw = sacct_field(slurm_site, job.backend_id, "ElapsedRaw").split()
        elapsed = [int(e) for e in raw if e.strip().isdigit()]
        if len(elapsed) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(elapsed) == 3
    assert job.elapsed_seconds == sum(elapsed)
    assert job.charged_cost == sum(elapsed) * CPU_SU_PER_SECOND
    assert slurm_allocation.held == 0


@both_slurms
def test_a_job_using_two_gpus_is_charged_at_the_gpu_rate_for_two_gpus(
    api_alice, slurm_cluster, slurm_allocation, slurm_site
):
    job = submit(
        api_alice,
        gpus=2,
        gpu_type="h100",
        memory_mb=512,
        script='echo "gpus: $SLURM_JOB_GPUS"\nsleep 2\n',
    )

    sync_until(slurm_cluster, [job])

    assert job.state == Job.State.COMPLETED
    assert (job.usage["gpus"], job.usage["gpu_type"], job.usage["source"]) == (
        2,
        "h100",
        "accounting",
    )
    assert job.elapsed_seconds >= 2
    per_second = 2 * GPU_SU_PER_SECOND + CPU_SU_PER_SECOND
    assert job.charged_cost == job.elapsed_seconds * per_second
    alloc_tres = sacct_field(slurm_site, job.backend_id, "AllocTRES").split(",")
    assert "gres/gpu=2" in alloc_tres
    assert "mem=512M" in alloc_tres
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"].startswith("gpus: ")


@both_slurms
def test_cancelling_a_running_job_ends_it_cancelled_and_charges_its_run_time(
    api_alice, slurm_cluster, slurm_allocation, slurm_site
):
    job = submit(api_alice, script="echo started\nsleep 300\necho never\n", time_limit_minutes=10)
    sync_until(
        slurm_cluster,
        [job],
        lambda j: (
            j.state == Job.State.RUNNING
            and api_alice.get(f"/api/v1/jobs/{j.uuid}/log/").json()["data"] == "started\n"
        ),
        timeout=60,
    )
    time.sleep(2)

    response = api_alice.post(f"/api/v1/jobs/{job.uuid}/cancel/")
    assert response.status_code == HTTPStatus.ACCEPTED
    sync_until(slurm_cluster, [job], timeout=60)

    slurm_allocation.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert 2 <= job.elapsed_seconds <= 30
    assert abs(job.elapsed_seconds - run_seconds(job)) <= 1
    assert job.charged_cost == job.elapsed_seconds * CPU_SU_PER_SECOND
    assert (slurm_allocation.held, slurm_allocation.charged) == (0, job.charged_cost)
    [tagged] = slurm_jobs_tagged(slurm_site, job.uuid)
    assert records.state_name(tagged["job_state"]) == "CANCELLED"
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "started\n"


@both_slurms
def test_cancelling_a_job_slurmctld_no_longer_knows_is_done_not_an_outage(slurm_site):
    """A job slurmctld forgot (MinJobAge after its end, or never had): nothing is left to stop.
    slurmrestd 22.05 answers that cancel with HTTP 500 and errno 2017, which once made the
    portal answer "Cluster did not answer" (a session job whose app had failed at start)."""
    backend = SlurmBackend(name="forgotten", options=slurm_site.options())

    backend.cancel(JobRef(uuid=uuid.uuid4(), backend_id="99999999", cluster_user=ALICE_UNIX))


def test_a_job_past_its_time_limit_ends_in_timeout_and_is_charged_up_to_its_limit(
    api_alice, slurm_cluster, slurm_allocation
):
    job = submit(api_alice, script="echo begin\nsleep 150\necho never\n", time_limit_minutes=1)

    # slurmctld checks time limits about every 30 s: a 1-minute job ends after 60-95 s.
    sync_until(slurm_cluster, [job], timeout=150, interval=2)

    slurm_allocation.refresh_from_db()
    assert job.state == Job.State.TIMEOUT
    assert 60 <= job.elapsed_seconds <= 100
    # Its run is priced in full, but a job is never charged more than was held for its limit.
    assert Decimal(job.usage["cost"]) == job.elapsed_seconds * CPU_SU_PER_SECOND
    assert job.charged_cost == job.estimated_cost == Decimal(60)
    assert (slurm_allocation.held, slurm_allocation.charged) == (0, Decimal(60))
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "begin\n"


def test_while_slurmrestd_is_down_a_job_stays_pending_and_goes_through_once_when_it_is_back(
    api_alice, slurm_cluster, slurm_allocation, slurm_site, private_slurmrestd
):
    slurm_cluster.options = {**slurm_cluster.options, "url": private_slurmrestd.url}
    slurm_cluster.save()
    private_slurmrestd.stop()
    response = api_alice.post("/api/v1/jobs/", body(name="outage"), format="json")
    assert response.status_code == HTTPStatus.CREATED
    job = Job.objects.get(uuid=response.json()["id"])

    with pytest.raises(BackendUnavailable):
        job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert job.forward_attempts == 1
    assert "unavailable" in job.state_reason
    assert job.backend_id == ""

    private_slurmrestd.start()
    job_forward(job_id=job.pk)
    job_forward(job_id=job.pk)  # a duplicate delivery of the task does nothing
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    # The answer to a submission can be lost: the retry finds the job by its uuid.
    Job.objects.filter(pk=job.pk).update(state=Job.State.PENDING)
    job_forward(job_id=job.pk)

    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.events.filter(message__startswith="Found on the cluster").count() == 1
    tagged = slurm_jobs_tagged(slurm_site, job.uuid)
    assert [str(t["job_id"]) for t in tagged] == [job.backend_id]
    sync_until(slurm_cluster, [job])
    assert job.state == Job.State.COMPLETED


def test_a_submission_the_allocation_cannot_cover_is_refused_with_the_shortfall_and_never_sent(
    api_alice, slurm_cluster, slurm_allocation, slurm_site
):
    name = f"too-big-{uuid.uuid4().hex[:8]}"
    response = api_alice.post(
        "/api/v1/jobs/",
        body(name=name, gpus=4, gpu_type="h100", time_limit_minutes=1440),
        format="json",
    )

    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    data = response.json()
    assert data["code"] == "insufficient_quota"
    required = 86400 * (4 * GPU_SU_PER_SECOND + CPU_SU_PER_SECOND)  # 777,600 SU
    assert Decimal(data["shortfall"]) == required - Decimal(100_000)
    slurm_allocation.refresh_from_db()
    assert slurm_allocation.held == 0
    assert not Job.objects.exists()
    listing = slurm_site.rest().call("GET", slurm_site.api.ctld("/jobs"), user=ALICE_UNIX) or {}
    assert [j for j in listing["jobs"] if j["name"] == name] == []


@both_slurms
def test_a_job_slurm_refuses_is_rejected_with_slurms_reason_and_its_hold_released(
    api_alice, slurm_cluster, slurm_allocation
):
    slurm_cluster.options = {**slurm_cluster.options, "account": "no-such-account"}
    slurm_cluster.save()
    response = api_alice.post("/api/v1/jobs/", body(), format="json")
    job = Job.objects.get(uuid=response.json()["id"])

    job_forward(job_id=job.pk)

    job.refresh_from_db()
    slurm_allocation.refresh_from_db()
    assert job.state == Job.State.REJECTED
    assert "Invalid account" in job.state_reason
    assert job.charged_cost == 0
    assert (slurm_allocation.held, slurm_allocation.charged) == (0, 0)


@both_slurms
def test_without_accounting_usage_comes_from_slurmctlds_record_and_says_so(
    slurm_site: SlurmSite, slurmrestd_without_accounting
):
    backend = SlurmBackend(name="early", options=slurm_site.options())
    blind = SlurmBackend(
        name="blind", options=slurm_site.options(url=slurmrestd_without_accounting.url)
    )
    job = JobSpec(
        uuid=uuid.uuid4(),
        name="blind",
        project="folding",
        cluster_user=ALICE_UNIX,
        script="sleep 2\n",
        memory_mb=128,
        gpus=1,
        gpu_type="h100",
        time_limit_minutes=1,
    )
    ref = JobRef(uuid=job.uuid, backend_id=backend.submit(job), cluster_user=ALICE_UNIX)
    deadline = time.monotonic() + 60
    while blind.poll([ref])[ref.backend_id].state != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.5)

    from_ctld = blind.usage([ref])[ref.backend_id]
    from_dbd = backend.usage([ref])[ref.backend_id]

    assert from_ctld.raw["source"].startswith("slurmctld job record")
    assert from_dbd.raw["source"] == "slurmdbd"
    for record in (from_ctld, from_dbd):
        assert (record.gpus, record.gpu_type, record.cpus, record.memory_mb) == (1, "h100", 1, 128)
    assert abs(from_ctld.elapsed_seconds - from_dbd.elapsed_seconds) <= 1
    assert from_dbd.elapsed_seconds >= 2


@both_slurms
def test_a_job_slurmctld_has_forgotten_is_finished_from_accounting(
    slurm_cluster, slurm_allocation, slurm_site, early_job, tenant, alice
):
    portal_uuid, backend_id = early_job
    deadline = time.monotonic() + 180
    while slurm_jobs_tagged(slurm_site, portal_uuid):  # kept MinJobAge=60 s after its end
        assert time.monotonic() < deadline, "slurmctld never forgot the early job"
        time.sleep(2)
    job = queued_job(tenant, alice, slurm_cluster, portal_uuid, backend_id)

    result = cluster_sync(cluster=slurm_cluster)

    job.refresh_from_db()
    assert result.backend_calls == 2  # poll (slurmctld, then slurmdbd for it) and usage
    assert job.state == Job.State.COMPLETED
    assert job.exit_code == 0
    assert job.usage["source"] == "accounting"
    # Priced from accounting; the job has no hold (it never went through job_submit), and a
    # job without a hold is not charged by settlement, so only its measured cost is checked.
    assert Decimal(job.usage["cost"]) == job.elapsed_seconds * CPU_SU_PER_SECOND


def queued_job(tenant, user, cluster: Cluster, portal_uuid: uuid.UUID, backend_id: str) -> Job:
    """A queued portal job already handed to Slurm as `backend_id` (no hold)."""
    return Job.objects.create(
        uuid=portal_uuid,
        project=tenant.project,
        user=user,
        cluster=cluster,
        name="early",
        script="echo early bird\n",
        memory_mb=128,
        time_limit_minutes=1,
        state=Job.State.QUEUED,
        backend_id=backend_id,
        cluster_username=ALICE_UNIX,
    )


@both_slurms
def test_the_backend_polls_many_jobs_with_one_listing_call(slurm_backend: SlurmBackend):
    refs = [
        JobRef(uuid=uuid.uuid4(), backend_id=str(n), cluster_user=ALICE_UNIX) for n in range(1, 4)
    ]
    calls: list[str] = []
    original = slurm_backend.rest.call

    def counting(method: str, path: str, **kwargs: Any):
        calls.append(f"{method} {path}")
        return original(method, path, **kwargs)

    api = slurm_backend.api  # negotiated (one GET /openapi/v3) before counting
    slurm_backend.rest.call = counting  # type: ignore[method-assign]
    try:
        slurm_backend.poll(refs)
    finally:
        del slurm_backend.rest.call
    # Unknown (or foreign) ids: one listing, then one accounting lookup for all of them.
    assert calls == [f"GET {api.ctld('/jobs')}", f"GET {api.dbd('/jobs')}"]
