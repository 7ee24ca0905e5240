"""Jobs on a Kubernetes cluster through the portal API, end to end: the real `kubernetes`
client talks to the local API server, whose clock moves the Jobs."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest

from jobs.backends.base import BackendUnavailable
from jobs.models import ClusterAccount, Job
from jobs.services import cluster_sync, job_forward
from quotas.models import Allocation, Cluster, Hold, LedgerEntry
from quotas.reconcile import reconcile_ledger
from quotas.services import ledger_credit
from tests import factories
from tests.k8s_server import FakeKubernetes

JOBS_LIST = "/apis/batch/v1/jobs"
# Project "folding" of organization "vision-lab": prefix + "vision-lab.folding", DNS-safe.
NAMESPACE = "gpuc-vision-lab-folding-07452c5c"
BODY: dict[str, Any] = {
    "project": "folding",
    "cluster": "kube",
    "name": "train",
    "script": "echo training\nsleep 1800\necho 0.93 > metrics.txt\necho done\n",
    "gpus": 1,
    "gpu_type": "h100",
    "cpus": 1,
    "memory_mb": 1024,
    "time_limit_minutes": 60,
}


@pytest.fixture
def body(k8s_allocation: Allocation) -> dict[str, Any]:
    return dict(BODY)


def _submit(api, body: dict[str, Any], **fields: Any) -> Job:
    response = api.post("/api/v1/jobs/", {**body, **fields}, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.json()
    return Job.objects.get(uuid=response.json()["id"])


def _charges(job: Job) -> list[Decimal]:
    return list(
        LedgerEntry.objects.filter(job_uuid=job.uuid, kind=LedgerEntry.Kind.CHARGE).values_list(
            "amount", flat=True
        )
    )


def test_a_job_runs_on_kubernetes_shows_its_log_and_results_and_is_charged_for_its_run(
    api_alice, body, k8s: FakeKubernetes, k8s_cluster: Cluster, k8s_allocation: Allocation
):
    job = _submit(api_alice, body)
    k8s_allocation.refresh_from_db()
    assert job.estimated_cost == Decimal("2.1100")  # 1 h × (2 + 0.1 + 0.01) SU
    assert k8s_allocation.held == Decimal("2.1100")

    job_forward(job_id=job.pk)
    cluster_sync(cluster=k8s_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.backend_id == f"{NAMESPACE}/gpuc-{job.uuid}"

    k8s.advance(10)
    cluster_sync(cluster=k8s_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    live = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert (live["data"], live["eof"]) == ("training\n", False)

    k8s.advance(3600)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    k8s_allocation.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    assert job.exit_code == 0
    assert job.elapsed_seconds == 1800
    assert job.charged_cost == Decimal("1.0550")  # 0.5 h × 2.11 SU/h
    assert _charges(job) == [Decimal("1.0550")]
    assert (k8s_allocation.held, k8s_allocation.charged) == (0, Decimal("1.0550"))
    assert Hold.objects.get(pk=job.hold_id).state == Hold.State.SETTLED

    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"offset": len("training\n")}).json()
    assert (log["data"], log["eof"]) == ("done\n", True)
    results = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    assert [(r["path"], r["size"]) for r in results] == [("metrics.txt", 5)]
    download = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/metrics.txt")
    assert download.status_code == HTTPStatus.OK
    assert b"".join(download.streaming_content) == b"0.93\n"


def test_a_container_exiting_3_ends_failed_with_exit_code_3(
    api_alice, body, k8s, k8s_cluster, k8s_allocation
):
    job = _submit(api_alice, body, script="echo starting\nsleep 60\nexit 3\n")
    job_forward(job_id=job.pk)
    k8s.advance(120)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    k8s_allocation.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.exit_code == 3
    assert job.elapsed_seconds == 60
    assert job.charged_cost == Decimal("0.0352")  # 1 min × 2.11 SU/h
    assert k8s_allocation.held == 0


def test_a_job_past_its_deadline_times_out_and_is_charged_for_the_limit(
    api_alice, body, k8s, k8s_cluster
):
    job = _submit(api_alice, body, script="sleep 7200", time_limit_minutes=1)
    job_forward(job_id=job.pk)
    k8s.advance(600)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    assert job.state == Job.State.TIMEOUT
    assert job.elapsed_seconds == 60
    assert job.charged_cost == job.estimated_cost
    assert k8s.jobs[(NAMESPACE, f"gpuc-{job.uuid}")]["spec"]["activeDeadlineSeconds"] == 60


def test_cancelling_a_running_job_deletes_it_in_the_foreground_and_charges_its_run(
    api_alice, body, k8s, k8s_cluster, k8s_allocation
):
    job = _submit(api_alice, body, script="sleep 3000")
    job_forward(job_id=job.pk)
    k8s.advance(600)
    cluster_sync(cluster=k8s_cluster)

    response = api_alice.post(f"/api/v1/jobs/{job.uuid}/cancel/")
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.ACCEPTED)
    assert k8s.deletions == [(NAMESPACE, f"gpuc-{job.uuid}", "Foreground")]
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    k8s_allocation.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.elapsed_seconds == 600
    assert job.charged_cost == Decimal("0.3517")  # 10 min × 2.11 SU/h
    assert (k8s_allocation.held, k8s_allocation.charged) == (0, Decimal("0.3517"))


def test_a_cancelled_job_gone_before_the_sync_is_charged_from_its_recorded_start(
    api_alice, body, k8s, k8s_cluster
):
    k8s.foreground_linger = False  # the Job disappears at once
    job = _submit(api_alice, body, script="sleep 3000")
    job_forward(job_id=job.pk)
    k8s.advance(600)
    cluster_sync(cluster=k8s_cluster)

    api_alice.post(f"/api/v1/jobs/{job.uuid}/cancel/")
    assert k8s.jobs == {}
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.elapsed_seconds == 600
    assert job.charged_cost == Decimal("0.3517")


def test_an_unreachable_api_server_leaves_the_job_pending_then_exactly_one_job_is_created(
    api_alice, body, k8s, k8s_cluster
):
    k8s.stop()
    job = _submit(api_alice, body)
    with pytest.raises(BackendUnavailable):
        job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert job.hold.state == Hold.State.OPEN

    k8s.start()
    job_forward(job_id=job.pk)
    job_forward(job_id=job.pk)  # a duplicate delivery of the task changes nothing

    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    created = [
        j
        for j in k8s.created_jobs
        if j["metadata"]["labels"]["gpu-commons/job-uuid"] == str(job.uuid)
    ]
    assert len(created) == 1
    assert len(k8s.jobs) == 1


def test_a_create_whose_answer_was_lost_is_found_not_repeated(api_alice, body, k8s, k8s_cluster):
    job = _submit(api_alice, body)
    k8s.fail_next("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs", 503, after=True)
    with pytest.raises(BackendUnavailable):
        job_forward(job_id=job.pk)
    assert len(k8s.jobs) == 1  # the server did create it

    job_forward(job_id=job.pk)

    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.backend_id == f"{NAMESPACE}/gpuc-{job.uuid}"
    assert len(k8s.created_jobs) == 1


def test_a_two_gpu_job_asks_kubernetes_for_two_gpus_and_is_charged_for_two(
    api_alice, body, k8s, k8s_cluster
):
    job = _submit(api_alice, body, gpus=2)
    assert job.estimated_cost == Decimal("4.1100")
    job_forward(job_id=job.pk)
    container = k8s.created_jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    k8s.advance(3600)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    assert job.usage["gpus"] == 2
    assert job.charged_cost == Decimal("2.0550")  # 0.5 h × (2 × 2 + 0.1 + 0.01)


@pytest.mark.parametrize("count", [3, 15])
def test_a_sync_tick_makes_one_list_call_whatever_the_number_of_jobs(
    api_alice, body, k8s, k8s_cluster, count
):
    jobs = [_submit(api_alice, body, time_limit_minutes=30) for _ in range(count)]
    for job in jobs:
        job_forward(job_id=job.pk)
    k8s.advance(10)
    k8s.requests.clear()
    cluster_sync(cluster=k8s_cluster)
    assert k8s.calls() == [JOBS_LIST]

    k8s.advance(3600)
    k8s.requests.clear()
    result = cluster_sync(cluster=k8s_cluster)

    assert result.finalized == count
    assert k8s.calls() == [JOBS_LIST]  # usage comes from the same listing
    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.COMPLETED}


def test_a_sync_tick_on_a_cluster_listing_two_jobs_a_page_sees_all_five_jobs(
    api_alice, body, k8s, k8s_cluster
):
    k8s_cluster.options = {**k8s_cluster.options, "list_page_size": 2}
    k8s_cluster.save(update_fields=["options"])
    jobs = [_submit(api_alice, body, time_limit_minutes=30) for _ in range(5)]
    for job in jobs:
        job_forward(job_id=job.pk)
    k8s.advance(10)
    k8s.requests.clear()

    cluster_sync(cluster=k8s_cluster)

    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.RUNNING}
    pages = [query for _, path, query in k8s.requests if path == JOBS_LIST]
    assert k8s.calls() == [JOBS_LIST] * 3
    assert [page["limit"] for page in pages] == [["2"]] * 3
    assert ["continue" in page for page in pages] == [False, True, True]
    assert pages[1]["continue"] != pages[2]["continue"]

    k8s.advance(3600)
    result = cluster_sync(cluster=k8s_cluster)

    assert result.finalized == 5
    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.COMPLETED}


def test_one_allocation_pays_for_jobs_on_a_simulated_and_a_kubernetes_cluster_and_reconciles(
    api_alice, tenant, alice, k8s, k8s_cluster, sim_cluster, sim
):
    # Real Slurm belongs to the Slurm backend's tests; the simulated backend stands in here.
    allocation = factories.AllocationFactory(
        project=tenant.project, clusters=[k8s_cluster, sim_cluster]
    )
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(100), key="both-clusters")
    ClusterAccount.objects.create(user=alice, cluster=k8s_cluster, username="alice", uid=1001)
    ClusterAccount.objects.create(user=alice, cluster=sim_cluster, username="alice", uid=1001)

    on_k8s = _submit(api_alice, BODY)
    on_sim = _submit(
        api_alice, BODY, cluster="sim", script="echo hi", env={"SIM_DURATION_SECONDS": "900"}
    )
    allocation.refresh_from_db()
    assert allocation.held == Decimal("4.2200")
    for job in (on_k8s, on_sim):
        job_forward(job_id=job.pk)
    k8s.advance(3600)
    sim.advance(3600)
    cluster_sync(cluster=k8s_cluster)
    cluster_sync(cluster=sim_cluster)

    on_k8s.refresh_from_db()
    on_sim.refresh_from_db()
    allocation.refresh_from_db()
    assert (on_k8s.state, on_sim.state) == (Job.State.COMPLETED, Job.State.COMPLETED)
    assert on_k8s.charged_cost == Decimal("1.0550")  # 30 min
    assert on_sim.charged_cost == Decimal("0.5275")  # 15 min
    assert allocation.held == 0
    assert allocation.charged == Decimal("1.5825")
    assert set(
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).values_list(
            "allocation_id", flat=True
        )
    ) == {allocation.pk}
    report = reconcile_ledger()
    assert report.ok, report.format()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"image": "docker.io/evil/miner:latest"}, "image"),
        ({"script": "", "image": "busybox:1.36", "command": "echo hi"}, "command"),
        ({"script": "", "image": "busybox:1.36", "command": ["echo", 1]}, "command"),
        ({"gpus": 9}, "gpus"),
        ({"cpus": 65}, "cpus"),
        ({"memory_mb": 300000}, "memory_mb"),
        ({"time_limit_minutes": 5000}, "time_limit_minutes"),
        ({"name": "my training run"}, "name"),
        ({"name": "x" * 64}, "name"),  # the name becomes a label: at most 63 characters
        ({"name": "run-"}, "name"),
        ({"array": "1-10"}, "array"),  # Indexed Jobs count from 0
    ],
)
def test_bad_input_is_a_400_naming_the_field_with_nothing_held_or_sent(
    api_alice, body, k8s, k8s_allocation, fields, field
):
    response = api_alice.post("/api/v1/jobs/", {**body, **fields}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.json()
    assert response.json()["field"] == field
    k8s_allocation.refresh_from_db()
    assert k8s_allocation.held == 0
    assert not Job.objects.exists()
    assert k8s.requests == []


def test_the_estimate_refuses_an_image_outside_the_allow_list_too(api_alice, body, k8s):
    response = api_alice.post(
        "/api/v1/jobs/estimate/", {**body, "image": "docker.io/evil/miner:latest"}, format="json"
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "image"
    assert k8s.requests == []


def test_a_command_runs_in_an_allowed_image_of_the_users_choice(api_alice, body, k8s, k8s_cluster):
    job = _submit(
        api_alice,
        body,
        script="",
        image="ghcr.io/vision-lab/fold:2.1",
        command=["/bin/sh", "-c", "echo from the image; sleep 60"],
    )
    job_forward(job_id=job.pk)
    k8s.advance(120)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    container = k8s.created_jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/vision-lab/fold:2.1"
    assert container["command"] == ["/bin/sh", "-c", "echo from the image; sleep 60"]
    assert job.state == Job.State.COMPLETED
    assert job.elapsed_seconds == 60
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "from the image\n"
