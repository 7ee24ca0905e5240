"""POST /api/v1/jobs/batch/: many jobs at once, all or nothing, one hold per job."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from jobs.drafts import JobDraft
from jobs.models import Job, JobEvent
from jobs.services import job_submit_many, jobs_forward_batch
from quotas.models import Hold

pytestmark = pytest.mark.django_db

URL = "/api/v1/jobs/batch/"
JOB = {
    "name": "sweep",
    "script": "#!/bin/bash\necho hi\n",
    "gpus": 1,
    "cpus": 1,
    "memory_mb": 1024,
    "time_limit_minutes": 60,
}
# 2 SU/h100-hour + 0.1 SU/CPU-hour + 0.01 SU/GB-hour for one hour (see tests/jobs/conftest.py)
JOB_COST = Decimal("2.1100")


@pytest.fixture
def batch(tenant, sim_cluster, allocation, accounts):
    def _batch(n: int, **fields) -> dict:
        jobs = [{**JOB, "name": f"sweep-{i}", **fields} for i in range(n)]
        return {"project": str(tenant.project.uuid), "cluster": sim_cluster.name, "jobs": jobs}

    return _batch


def test_a_batch_of_20_creates_20_pending_jobs_each_with_its_own_hold_and_forwards_them(
    api_alice, batch, sim_cluster, allocation, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_alice.post(URL, batch(20), format="json")

    assert response.status_code == HTTPStatus.CREATED, response.json()
    data = response.json()
    assert len(data["jobs"]) == 20
    assert data["estimated_cost"] == str(JOB_COST * 20)
    jobs = {str(j.uuid): j for j in Job.objects.select_related("hold")}
    assert list(jobs) and set(jobs) == {j["id"] for j in data["jobs"]}
    assert [jobs[j["id"]].name for j in data["jobs"]] == [f"sweep-{i}" for i in range(20)]
    for job in jobs.values():
        assert job.state == Job.State.PENDING
        assert job.estimated_cost == JOB_COST
        assert job.hold.key == f"job:{job.uuid}"
        assert job.hold.amount == JOB_COST
        assert job.hold.state == Hold.State.OPEN
    assert Hold.objects.count() == 20
    assert JobEvent.objects.filter(to_state=Job.State.PENDING).count() == 20
    allocation.refresh_from_db()
    assert allocation.held == JOB_COST * 20
    assert len(callbacks) == 1  # one debounced "forward this cluster" task for the batch

    assert jobs_forward_batch(cluster_id=sim_cluster.pk) == 20
    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.QUEUED}


def test_one_invalid_job_rejects_the_whole_batch_naming_its_index_and_field(
    api_alice, batch, allocation
):
    body = batch(5)
    body["jobs"][3]["gpus"] = 99

    response = api_alice.post(URL, body, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "jobs[3].gpus"
    assert not Job.objects.exists()
    assert not Hold.objects.exists()
    allocation.refresh_from_db()
    assert allocation.held == 0


def test_a_reserved_env_name_in_one_job_rejects_the_batch_naming_the_job_and_variable(
    api_alice, batch, allocation
):
    body = batch(3)
    body["jobs"][2]["env"] = {"GPUC_SESSION_PORT": "8888"}

    response = api_alice.post(URL, body, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "jobs[2].env"
    assert "GPUC_SESSION_PORT is reserved" in response.json()["detail"]
    assert not Job.objects.exists()
    assert not Hold.objects.exists()


def test_a_malformed_or_unknown_field_names_the_job_it_is_in(api_alice, batch):
    body = batch(3)
    body["jobs"][2]["colour"] = "red"
    response = api_alice.post(URL, body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "jobs[2].colour"

    body = batch(3)
    body["jobs"][1]["cpus"] = "many"
    response = api_alice.post(URL, body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "jobs[1].cpus"
    assert not Job.objects.exists()


def test_more_than_500_jobs_or_none_is_a_400_naming_jobs(api_alice, batch):
    for n in (0, 501):
        response = api_alice.post(URL, batch(n), format="json")
        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert response.json()["field"] == "jobs"
    assert not Job.objects.exists()


def test_a_batch_that_does_not_fit_is_a_402_with_its_shortfall_and_holds_nothing(
    api_alice, batch, allocation
):
    # 1000 SU available; 50 jobs of 24 hours cost 50 * 50.64 = 2532 SU
    response = api_alice.post(URL, batch(50, time_limit_minutes=24 * 60), format="json")

    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    data = response.json()
    assert data["code"] == "insufficient_quota"
    assert Decimal(data["required"]) == Decimal("2532.0000")
    assert Decimal(data["shortfall"]) == Decimal(data["required"]) - Decimal(data["available"])
    assert Decimal(data["shortfall"]) > Decimal("1500")
    assert not Job.objects.exists()
    assert not Hold.objects.exists()
    allocation.refresh_from_db()
    assert allocation.held == 0


def test_the_same_idempotency_key_returns_the_first_batch_and_creates_nothing_more(
    api_alice, batch
):
    first = api_alice.post(URL, batch(4), format="json", HTTP_IDEMPOTENCY_KEY="sweep-7")
    again = api_alice.post(URL, batch(4), format="json", HTTP_IDEMPOTENCY_KEY="sweep-7")
    other = api_alice.post(URL, batch(2), format="json", HTTP_IDEMPOTENCY_KEY="sweep-8")

    assert first.status_code == HTTPStatus.CREATED
    assert again.status_code == HTTPStatus.OK
    assert other.status_code == HTTPStatus.CREATED
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    assert again.json()["estimated_cost"] == first.json()["estimated_cost"]
    assert Job.objects.count() == 6
    assert Hold.objects.count() == 6


def test_mallory_cannot_submit_a_batch_into_alices_project(api_mallory, batch, mallory_tenant):
    response = api_mallory.post(URL, batch(3), format="json")

    # As for a single POST: a project the caller cannot see is an unknown body reference.
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "project"
    assert not Job.objects.exists()
    assert not Hold.objects.exists()


def test_a_batch_of_50_runs_a_bounded_number_of_queries(api_alice, batch):
    api_alice.post(URL, batch(1), format="json")  # warms the rate cache

    with CaptureQueriesContext(connection) as small:
        first = api_alice.post(URL, batch(5), format="json")
    with CaptureQueriesContext(connection) as queries:
        response = api_alice.post(URL, batch(50), format="json")

    assert first.status_code == HTTPStatus.CREATED
    assert response.status_code == HTTPStatus.CREATED
    sql = [q["sql"] for q in queries.captured_queries]
    # Measured: 16 statements whatever the size of the batch (one allocation): project,
    # cluster, the service's savepoint pair, access check; one INSERT of the jobs (in its own
    # savepoint pair) and one of the events; then ledger_hold_many's savepoint pair around one
    # SELECT ... FOR NO KEY UPDATE of the allocations, one INSERT of the holds, one of their
    # entries and one counter UPDATE per allocation touched; one UPDATE linking the jobs to
    # their holds. Before batching: 3 per job + 9 (159).
    assert len(sql) <= 16, sql
    assert len(sql) == len(small.captured_queries)
    assert sum(q.startswith('INSERT INTO "quotas_hold"') for q in sql) == 1
    assert sum(q.startswith('INSERT INTO "quotas_ledgerentry"') for q in sql) == 1
    assert sum(q.startswith('UPDATE "quotas_allocation"') for q in sql) == 1
    # The allocation rows are locked only after the jobs and events are written (the lock
    # lasts until commit, and other submissions to the project wait on it).
    first_index = next(i for i, q in enumerate(sql) if q.startswith('INSERT INTO "jobs_job"'))
    lock_index = next(i for i, q in enumerate(sql) if q.startswith('SELECT "quotas_allocation"'))
    assert "FOR NO KEY UPDATE" in sql[lock_index]
    assert first_index < lock_index


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_loses_an_idempotency_race_returns_the_winners_jobs_and_keeps_no_hold(
    alice, tenant, sim_cluster, allocation, accounts
):
    inserted, winner = threading.Event(), {}
    drafts = [JobDraft(**{**JOB, "name": f"race-{i}"}) for i in range(3)]

    def submit(key: str) -> list[Job]:
        return job_submit_many(
            user=alice,
            project=tenant.project,
            cluster=sim_cluster,
            drafts=drafts,
            idempotency_key=key,
        )

    def first_request() -> None:
        try:
            with transaction.atomic():
                winner["jobs"] = submit("same")
                inserted.set()
                time.sleep(0.5)  # the loser's INSERT waits on the keys meanwhile
        finally:
            connection.close()

    thread = threading.Thread(target=first_request)
    thread.start()
    assert inserted.wait(10)
    loser = submit("same")
    thread.join()

    assert [j.pk for j in loser] == [j.pk for j in winner["jobs"]]
    assert Job.objects.count() == 3
    assert set(Hold.objects.values_list("job_uuid", flat=True)) == {j.uuid for j in loser}
