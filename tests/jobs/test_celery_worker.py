"""A real Celery worker (Redis broker from CELERY_BROKER_URL) forwards and syncs a local job."""

from __future__ import annotations

import time
from decimal import Decimal
from http import HTTPStatus

import pytest
from celery.contrib.testing.worker import start_worker

from jobs.models import Job
from jobs.tasks import sync_all_clusters_task
from portal.celery import app as celery_app


def _wait(predicate, timeout: float = 40.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_forwards_syncs_and_charges_a_local_job_end_to_end(
    api_alice, tenant, local_cluster
):
    celery_app.control.purge()
    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
        response = api_alice.post(
            "/api/v1/jobs/",
            {
                "project": str(tenant.project.uuid),
                "cluster": "local",
                "name": "via-celery",
                "script": 'echo "from the worker"\necho 42 > "$GPUC_OUTPUT_DIR/answer.txt"\n',
                "gpus": 0,
                "cpus": 1,
                "memory_mb": 128,
                "time_limit_minutes": 5,
            },
            format="json",
        )
        assert response.status_code == HTTPStatus.CREATED
        job = Job.objects.get(uuid=response.json()["id"])

        # forward_job_task was queued on commit; the worker hands the job to the backend.
        _wait(lambda: Job.objects.get(pk=job.pk).backend_id)

        def finished() -> bool:
            sync_all_clusters_task.delay()
            time.sleep(0.5)
            return Job.objects.filter(pk=job.pk, finalized_at__isnull=False).exists()

        _wait(finished)

    job.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    assert job.backend_id == str(job.uuid)
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == "from the worker\n"
    result = api_alice.get(f"/api/v1/jobs/{job.uuid}/results/answer.txt")
    assert b"".join(result.streaming_content) == b"42\n"
    assert job.charged_cost == Decimal(job.elapsed_seconds)
    assert job.hold.state == "settled"
