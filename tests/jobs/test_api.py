"""The jobs API: submit, estimate, list, detail, cancel, logs, results, idempotency, tenancy."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest

from jobs.models import Job, JobTemplate
from jobs.services import cluster_sync, job_forward
from quotas.models import Hold

BODY = {
    "project": None,
    "cluster": "sim",
    "name": "train-1",
    "script": "#!/bin/bash\necho hi\n",
    "gpus": 1,
    "cpus": 1,
    "memory_mb": 1024,
    "time_limit_minutes": 60,
}


@pytest.fixture
def body(tenant, sim_cluster, allocation, accounts):
    return {**BODY, "project": str(tenant.project.uuid)}


def _job_id(response) -> str:
    return response.json()["id"]


def test_submit_by_api_runs_and_charges_what_the_job_used(api_alice, body, sim, sim_cluster):
    response = api_alice.post(
        "/api/v1/jobs/", {**body, "env": {"SIM_DURATION_SECONDS": "720"}}, format="json"
    )
    assert response.status_code == HTTPStatus.CREATED, response.json()
    data = response.json()
    assert data["state"] == "pending"
    assert data["estimated_cost"] == "2.1100"
    assert data["held"] == "2.1100"
    job = Job.objects.get(uuid=data["id"])

    job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    sim.advance(720)
    cluster_sync(cluster=sim_cluster)

    detail = api_alice.get(f"/api/v1/jobs/{job.uuid}/").json()
    assert detail["state"] == "completed"
    assert detail["charged_cost"] == "0.4220"  # 0.2 h × 2.11 SU/h
    assert detail["held"] == "0.0000"
    assert detail["usage"]["elapsed_seconds"] == 720
    assert [e["to_state"] for e in detail["events"]][:4] == [
        "pending",
        "queued",
        "running",
        "completed",
    ]


def test_estimate_returns_the_cost_and_its_breakdown_without_submitting(api_alice, body, sim):
    response = api_alice.post("/api/v1/jobs/estimate/", {**body, "gpus": 2}, format="json")
    assert response.status_code == HTTPStatus.OK
    assert response.json()["estimated_cost"] == "4.1100"
    assert [line["resource"] for line in response.json()["breakdown"]] == [
        "gpu_hour:h100",
        "cpu_hour",
        "mem_gb_hour",
    ]
    assert not Job.objects.exists()
    assert not Hold.objects.exists()


def test_a_submission_the_allocation_cannot_cover_is_refused_with_the_shortfall(
    api_alice, body, sim, allocation
):
    response = api_alice.post(
        "/api/v1/jobs/", {**body, "gpus": 8, "time_limit_minutes": 7 * 24 * 60}, format="json"
    )
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    data = response.json()
    assert data["code"] == "insufficient_quota"
    # (8 × 2 + 0.1 + 0.01) SU/h for 168 h = 2706.48 SU; 1000 available
    assert Decimal(data["shortfall"]) == Decimal("1706.48")
    allocation.refresh_from_db()
    assert allocation.held == 0
    assert not Job.objects.exists()
    assert sim.state.jobs == {}


def test_a_retried_post_with_the_same_idempotency_key_returns_the_first_job(
    api_alice, body, allocation
):
    first = api_alice.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api_alice.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other = api_alice.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert first.status_code == HTTPStatus.CREATED
    assert again.status_code == HTTPStatus.OK
    assert _job_id(again) == _job_id(first)
    assert _job_id(other) != _job_id(first)
    assert Job.objects.count() == 2
    allocation.refresh_from_db()
    assert allocation.held == Decimal("4.2200")


BAD_INPUT = [
    ({"script": ""}, "script"),
    ({"script": "   \n"}, "script"),
    ({"script": "#" * (1024 * 1024 + 1)}, "script"),
    ({"gpu_type": "tpu-v9"}, "gpu_type"),
    ({"gpus": -1}, "gpus"),
    ({"gpus": 100000}, "gpus"),
    ({"cpus": 0}, "cpus"),
    ({"cpus": 10**12}, "cpus"),
    ({"memory_mb": -5}, "memory_mb"),
    ({"memory_mb": 10**15}, "memory_mb"),
    ({"time_limit_minutes": 0}, "time_limit_minutes"),
    ({"time_limit_minutes": 10**9}, "time_limit_minutes"),
    ({"gpus": "two"}, "gpus"),
    ({"name": "x; rm -rf /"}, "name"),
    ({"name": "$(reboot)"}, "name"),
    ({"name": "a`id`"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "-leading-dash"}, "name"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"env": {"BAD-NAME": "x"}}, "env"),
    ({"env": {"OK": 5}}, "env"),
    ({"env": ["A=1"]}, "env"),
    ({"array": "0-99%0"}, "array"),
    ({"array": "5-1"}, "array"),
    ({"array": "1;2"}, "array"),
    ({"partition": "nope"}, "partition"),
    ({"surprise": 1}, "surprise"),
    ({"cluster": "nowhere"}, "cluster"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_held_or_sent(
    api_alice, body, sim, allocation, change, field
):
    response = api_alice.post("/api/v1/jobs/", {**body, **change}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.json()
    assert response.json()["field"] == field
    allocation.refresh_from_db()
    assert allocation.held == 0
    assert not Job.objects.exists()
    assert not Hold.objects.exists()
    assert sim.state.jobs == {}


@pytest.mark.parametrize("name", ["GPUC_SESSION_PORT", "GPUC_PROJECT_DIR", "GPUC_"])
def test_an_env_name_starting_with_gpuc_is_a_400_naming_it_as_reserved_for_the_portal(
    api_alice, body, sim, allocation, name
):
    response = api_alice.post("/api/v1/jobs/", {**body, "env": {name: "8888"}}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.json()
    assert response.json()["field"] == "env"
    assert response.json()["detail"] == (
        f"env name {name} is reserved: names starting with GPUC_ are set by the portal"
    )
    estimate = api_alice.post("/api/v1/jobs/estimate/", {**body, "env": {name: "1"}}, format="json")
    assert estimate.status_code == HTTPStatus.BAD_REQUEST
    assert "reserved" in estimate.json()["detail"]
    allocation.refresh_from_db()
    assert allocation.held == 0
    assert not Job.objects.exists()
    assert sim.state.jobs == {}


def test_the_reserved_prefix_is_case_sensitive_as_environment_names_are(api_alice, body):
    response = api_alice.post("/api/v1/jobs/", {**body, "env": {"gpuc_seed": "7"}}, format="json")

    assert response.status_code == HTTPStatus.CREATED, response.json()
    assert Job.objects.get().env == {"gpuc_seed": "7"}


def test_a_missing_gpu_type_defaults_to_the_clusters_first(api_alice, body):
    response = api_alice.post("/api/v1/jobs/", body, format="json")
    assert response.json()["gpu_type"] == "h100"


def test_a_user_without_a_cluster_account_cannot_submit(api_alice, body, alice):
    alice.cluster_accounts.all().delete()
    response = api_alice.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "cluster"
    assert not Job.objects.exists()


def test_a_cluster_account_named_root_is_refused(api_alice, body, alice):
    alice.cluster_accounts.update(username="root", uid=None)
    response = api_alice.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "system account" in response.json()["detail"]


def test_a_disabled_cluster_refuses_submissions(api_alice, body, sim_cluster):
    sim_cluster.enabled = False
    sim_cluster.save()
    response = api_alice.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "cluster"


def test_the_list_is_newest_first_in_cursor_pages_and_scoped_to_members(
    api_alice, api_bob, api_mallory, body, mallory_tenant
):
    ids = [_job_id(api_alice.post("/api/v1/jobs/", body, format="json")) for _ in range(5)]
    page = api_bob.get("/api/v1/jobs/", {"page_size": 2})
    assert page.status_code == HTTPStatus.OK
    assert [j["id"] for j in page.json()["results"]] == ids[::-1][:2]
    second = api_bob.get(page.json()["next"])
    assert [j["id"] for j in second.json()["results"]] == ids[::-1][2:4]
    assert api_mallory.get("/api/v1/jobs/").json()["results"] == []
    filtered = api_alice.get("/api/v1/jobs/", {"state": "running"})
    assert filtered.json()["results"] == []
    assert api_alice.get("/api/v1/jobs/", {"state": "bogus"}).status_code == (
        HTTPStatus.BAD_REQUEST
    )


def test_the_list_filters_by_the_start_of_the_job_id_as_the_pages_show_it(
    api_alice, api_mallory, body, mallory_tenant
):
    ids = [_job_id(api_alice.post("/api/v1/jobs/", body, format="json")) for _ in range(3)]
    chosen = [
        "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11",
        "5b0e7a3c-9d01-4c2e-8f00-000000000002",
        "5b0e7a3d-0000-4000-8000-000000000003",
    ]
    for job_id, uuid in zip(ids, chosen, strict=True):
        Job.objects.filter(uuid=job_id).update(uuid=uuid)

    def found(client, prefix):
        response = client.get("/api/v1/jobs/", {"id_prefix": prefix})
        assert response.status_code == HTTPStatus.OK, response.json()
        return [j["id"] for j in response.json()["results"]]

    assert found(api_alice, "5b0e7a3c") == chosen[1::-1]  # newest first, like the list
    assert found(api_alice, "5B0E7A3C-4F3C") == chosen[:1]
    assert found(api_alice, chosen[2]) == chosen[2:]
    assert found(api_alice, "5b0e7a3e") == []
    assert found(api_mallory, "5b0e") == []
    for bad in ("5b0e7a3cz", "5" * 33, "5b0e'--"):
        response = api_alice.get("/api/v1/jobs/", {"id_prefix": bad})
        assert response.status_code == HTTPStatus.BAD_REQUEST, bad
        assert response.json()["field"] == "id_prefix"


def test_mallory_gets_404_on_every_job_endpoint(api_alice, api_mallory, body, mallory_tenant):
    job_id = _job_id(api_alice.post("/api/v1/jobs/", body, format="json"))
    for method, url in [
        ("get", f"/api/v1/jobs/{job_id}/"),
        ("post", f"/api/v1/jobs/{job_id}/cancel/"),
        ("get", f"/api/v1/jobs/{job_id}/log/?stream=stdout&offset=0"),
        ("get", f"/api/v1/jobs/{job_id}/results/"),
        ("get", f"/api/v1/jobs/{job_id}/results/summary.txt"),
    ]:
        response = getattr(api_mallory, method)(url)
        assert response.status_code == HTTPStatus.NOT_FOUND, url
    assert Job.objects.get(uuid=job_id).state == Job.State.PENDING


def test_mallory_cannot_submit_into_alices_project(api_mallory, body, mallory_tenant):
    response = api_mallory.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "project"
    assert not Job.objects.exists()


def test_cancel_of_a_finished_job_is_a_conflict(api_alice, body, sim, sim_cluster):
    job = Job.objects.get(uuid=_job_id(api_alice.post("/api/v1/jobs/", body, format="json")))
    job_forward(job_id=job.pk)
    sim.advance(3600)
    cluster_sync(cluster=sim_cluster)
    response = api_alice.post(f"/api/v1/jobs/{job.uuid}/cancel/")
    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["code"] == "job_state"


def test_cancel_of_a_pending_job_by_api_cancels_it_and_releases_the_hold(
    api_alice, body, allocation
):
    job_id = _job_id(api_alice.post("/api/v1/jobs/", body, format="json"))
    response = api_alice.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.status_code == HTTPStatus.OK
    assert response.json()["state"] == "cancelled"
    allocation.refresh_from_db()
    assert allocation.held == 0


def test_a_project_member_cannot_cancel_someone_elses_job(api_alice, api_bob, body):
    job_id = _job_id(api_alice.post("/api/v1/jobs/", body, format="json"))
    response = api_bob.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert Job.objects.get(uuid=job_id).state == Job.State.PENDING


def test_log_offsets_past_the_end_are_a_400_naming_offset(api_alice, body, sim, sim_cluster):
    job = Job.objects.get(uuid=_job_id(api_alice.post("/api/v1/jobs/", body, format="json")))
    job_forward(job_id=job.pk)
    sim.advance(3600)
    cluster_sync(cluster=sim_cluster)
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"stream": "stdout", "offset": 0})
    assert log.status_code == HTTPStatus.OK
    assert "[sim] job train-1 queued" in log.json()["data"]
    assert log.json()["eof"] is True
    size = log.json()["next_offset"]
    at_end = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"offset": size})
    assert at_end.json() == {"data": "", "next_offset": size, "eof": True}
    past = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"offset": size + 1})
    assert past.status_code == HTTPStatus.BAD_REQUEST
    assert past.json()["field"] == "offset"
    tail = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"offset": -10})
    assert tail.json()["data"] == log.json()["data"][-10:]
    bad_stream = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/", {"stream": "stdin"})
    assert bad_stream.json()["field"] == "stream"


@pytest.mark.parametrize("path", ["../spec.json", "a/../../x", "..", "%2e%2e/x"])
def test_result_paths_with_dotdot_are_a_400_naming_path(api_alice, body, sim, path):
    job = Job.objects.get(uuid=_job_id(api_alice.post("/api/v1/jobs/", body, format="json")))
    job_forward(job_id=job.pk)
    response = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/{path}")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "path"


def test_results_are_listed_and_downloaded(api_alice, body, sim, sim_cluster):
    job = Job.objects.get(uuid=_job_id(api_alice.post("/api/v1/jobs/", body, format="json")))
    job_forward(job_id=job.pk)
    sim.advance(3600)
    cluster_sync(cluster=sim_cluster)
    listing = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/").json()["results"]
    download = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/summary.txt")
    assert download.status_code == HTTPStatus.OK
    assert download["Content-Type"] == "application/octet-stream"  # never rendered by name
    assert download["Content-Disposition"] == 'attachment; filename="summary.txt"'
    content = b"".join(download.streaming_content)
    assert content.startswith(str(job.uuid).encode())
    assert [(f["path"], f["size"]) for f in listing] == [("summary.txt", len(content))]
    missing = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/nothing.txt")
    assert missing.status_code == HTTPStatus.NOT_FOUND


def test_job_templates_are_listed_for_members_and_created_by_the_pi(
    api_alice, api_bob, api_mallory, tenant, sim_cluster, mallory_tenant
):
    response = api_alice.post(
        "/api/v1/job-templates/",
        {
            "name": "PyTorch DDP",
            "project": str(tenant.project.uuid),
            "cluster": "sim",
            "script": "torchrun train.py\n",
            "gpus": 4,
            "gpu_type": "a100",
        },
        format="json",
    )
    assert response.status_code == HTTPStatus.CREATED, response.json()
    assert JobTemplate.objects.get().gpus == 4
    assert [t["name"] for t in api_bob.get("/api/v1/job-templates/").json()["results"]] == [
        "PyTorch DDP"
    ]
    assert api_mallory.get("/api/v1/job-templates/").json()["results"] == []
    by_member = api_bob.post(
        "/api/v1/job-templates/", {"name": "x", "project": str(tenant.project.uuid)}, format="json"
    )
    assert by_member.status_code == HTTPStatus.FORBIDDEN
