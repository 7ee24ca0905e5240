"""The job page tells what went wrong: stderr beside stdout, the failure at the top, "(live)"
only while the job runs, and "resubmit with changes" that prefills the submit form."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest

from jobs.models import Job
from jobs.services import cluster_sync, job_forward
from quotas.services import ledger_adjust
from tests import factories


@pytest.fixture
def failed_job(submit, sim, sim_cluster) -> Job:
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "30", "SIM_EXIT_CODE": "3"})
    job_forward(job_id=job.pk)
    sim.advance(30)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    return job


def test_a_failed_job_shows_its_exit_code_at_the_top_and_opens_on_stderr(web_alice, failed_job):
    response = web_alice.get(f"/jobs/{failed_job.uuid}/")

    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    banner = html.index("job-failure")
    assert banner < html.index("Timeline") < html.index('id="log-tabs"')
    assert "Failed with exit code 3." in html[banner : banner + 300]
    assert '<pre class="log" id="log-stderr">exit code 3\n</pre>' in html
    assert '<pre class="log" id="log-stdout">[sim] job train queued' in html
    assert 'id="tab-stderr" class="tab-radio" checked' in html
    assert 'id="tab-stdout" class="tab-radio">' in html
    assert "(live)" not in html


def test_output_is_live_only_while_the_job_runs(web_alice, submit, sim, sim_cluster):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "60"})
    assert "(live)" not in web_alice.get(f"/jobs/{job.uuid}/").content.decode()
    job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING

    running = web_alice.get(f"/jobs/{job.uuid}/").content.decode()

    assert "(live)" in running
    assert 'id="tab-stdout" class="tab-radio" checked' in running
    assert "job-failure" not in running
    sim.advance(60)
    cluster_sync(cluster=sim_cluster)
    assert "(live)" not in web_alice.get(f"/jobs/{job.uuid}/").content.decode()


def test_the_stderr_tail_polls_its_own_stream(web_alice, failed_job):
    chunk = web_alice.get(f"/jobs/{failed_job.uuid}/log/?stream=stderr&offset=0")

    assert chunk.status_code == HTTPStatus.OK
    html = chunk.content.decode()
    assert html.startswith("exit code 3\n")
    assert 'id="log-poller-stderr"' in html
    assert "every 2s" not in html  # the job ended: nothing more to fetch


def test_resubmit_with_changes_prefills_the_form_from_the_job(web_alice, failed_job, tenant):
    page = web_alice.get(f"/jobs/{failed_job.uuid}/").content.decode()
    assert f'href="/jobs/new/?from={failed_job.uuid}"' in page

    form = web_alice.get(f"/jobs/new/?from={failed_job.uuid}")

    assert form.status_code == HTTPStatus.OK
    initial = form.context["form"].initial
    assert initial["project"] == tenant.project.uuid
    assert initial["cluster"] == "sim"
    assert (initial["name"], initial["script"], initial["gpus"]) == ("train", "echo hi\n", 1)
    assert initial["env"] == "SIM_DURATION_SECONDS=30\nSIM_EXIT_CODE=3\n"
    assert "SIM_EXIT_CODE=3" in form.content.decode()


def test_mallory_cannot_prefill_the_form_from_alices_job(web_mallory, failed_job):
    form = web_mallory.get(f"/jobs/new/?from={failed_job.uuid}")

    assert form.status_code == HTTPStatus.OK
    assert "SIM_EXIT_CODE" not in form.content.decode()
    assert "script" not in form.context["form"].initial


def test_mallory_gets_404_on_alices_stderr(web_mallory, failed_job):
    response = web_mallory.get(f"/jobs/{failed_job.uuid}/log/?stream=stderr&offset=0")
    assert response.status_code == HTTPStatus.NOT_FOUND


def test_a_resubmission_that_no_longer_fits_the_balance_names_the_shortfall(
    web_alice, alice, failed_job, allocation, tenant
):
    allocation.refresh_from_db()
    ledger_adjust(
        actor=factories.UserFactory(username="root", is_staff=True),
        allocation=allocation,
        amount=-(allocation.available - Decimal("0.5")),
        key="drain",
        memo="spent elsewhere",
    )
    data = {
        "project": str(tenant.project.uuid),
        "cluster": "sim",
        "name": "train",
        "script": "echo hi\n",
        "gpus": "1",
        "gpu_type": "",
        "cpus": "1",
        "memory_mb": "1024",
        "time_limit_minutes": "120",
        "partition": "",
        "array": "",
        "env": "",
    }

    response = web_alice.post("/jobs/new/", data)

    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert "Insufficient quota: this job needs 4.2200 SU" in html
    assert "at most 0.5000 SU available" in html
    assert "short by 3.7200 SU" in html
    assert Job.objects.count() == 1
