"""The job pages and the dashboard: render, submit, estimate live, tail the log, tenancy."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, ProjectMember
from jobs.models import ClusterAccessRequest, ClusterAccount, Job, JobTemplate
from jobs.services import cluster_sync, job_forward
from quotas.models import AllocationRequest
from tests import factories
from tests.conftest import signed_in


def _form(tenant, **fields):
    data = {
        "project": str(tenant.project.uuid),
        "cluster": "sim",
        "name": "web-job",
        "script": "echo web\n",
        "gpus": "1",
        "gpu_type": "",
        "cpus": "2",
        "memory_mb": "2048",
        "time_limit_minutes": "30",
        "partition": "",
        "array": "",
        "env": "SIM_DURATION_SECONDS=60\n# comment\n",
    }
    data.update(fields)
    return data


def test_the_submit_form_creates_a_job_and_shows_its_page(
    web_alice, tenant, sim_cluster, allocation, accounts
):
    assert web_alice.get("/jobs/new/").status_code == HTTPStatus.OK
    response = web_alice.post("/jobs/new/", _form(tenant))
    job = Job.objects.get()
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == f"/jobs/{job.uuid}/"
    assert job.env == {"SIM_DURATION_SECONDS": "60"}
    page = web_alice.get(response["Location"])
    assert page.status_code == HTTPStatus.OK
    assert b"web-job" in page.content
    assert b'hx-trigger="every 2s"' in page.content


def test_the_submit_form_shows_the_services_error_on_the_field(
    web_alice, tenant, sim_cluster, allocation, accounts
):
    response = web_alice.post("/jobs/new/", _form(tenant, name="rm -rf;"))
    assert response.status_code == HTTPStatus.OK
    assert "name must start with a letter" in response.content.decode()
    assert not Job.objects.exists()


def test_the_submit_form_refuses_an_env_name_reserved_for_the_portal(
    web_alice, tenant, sim_cluster, allocation, accounts
):
    response = web_alice.post("/jobs/new/", _form(tenant, env="GPUC_PROJECT_DIR=/etc\n"))

    assert response.status_code == HTTPStatus.OK  # the form again, with the error on env
    assert (
        "env name GPUC_PROJECT_DIR is reserved: names starting with GPUC_ are set by the portal"
    ) in response.content.decode()
    assert not Job.objects.exists()


def test_the_live_estimate_follows_the_fields(web_alice, tenant, sim_cluster, allocation):
    response = web_alice.post("/jobs/estimate/", _form(tenant, gpus="2", time_limit_minutes="60"))
    assert response.status_code == HTTPStatus.OK
    # 2 × 2 + 2 × 0.1 + 2 GB × 0.01 per hour
    assert "Estimated cost: 4.22 SU" in response.content.decode()
    bad = web_alice.post("/jobs/estimate/", _form(tenant, gpu_type="tpu"))
    assert "Cannot estimate: Unknown GPU type" in bad.content.decode()


def test_a_template_prefills_the_form(web_alice, tenant, sim_cluster):
    template = JobTemplate.objects.create(
        project=tenant.project, name="bert", script="python bert.py\n", gpus=4, cpus=8
    )
    page = web_alice.get(f"/jobs/new/?template={template.uuid}").content.decode()
    assert "python bert.py" in page
    assert 'value="8"' in page


def test_the_job_page_tails_the_log_and_stops_polling_when_done(
    web_alice, submit, sim, sim_cluster
):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "60"})
    job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    chunk = web_alice.get(f"/jobs/{job.uuid}/log/?offset=0")
    assert chunk.status_code == HTTPStatus.OK
    assert "[sim] job train queued" in chunk.content.decode()
    assert 'hx-swap-oob="true"' in chunk.content.decode()
    assert "every 2s" in chunk.content.decode()
    sim.advance(60)
    cluster_sync(cluster=sim_cluster)
    done = web_alice.get(f"/jobs/{job.uuid}/log/?offset=0").content.decode()
    assert "completed at" in done
    assert "every 2s" not in done
    page = web_alice.get(f"/jobs/{job.uuid}/").content.decode()
    assert "summary.txt" in page
    assert "Cancel job" not in page


def test_cancel_from_the_job_page(web_alice, submit, sim_cluster):
    job = submit(sim_cluster)
    response = web_alice.post(f"/jobs/{job.uuid}/cancel/")
    assert response.status_code == HTTPStatus.FOUND
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED


def test_the_job_list_filters_and_pages_with_a_keyset_cursor(web_alice, submit, sim_cluster):
    for i in range(55):
        submit(sim_cluster, name=f"j{i:02d}", gpus=0)
    first = web_alice.get("/jobs/").content.decode()
    assert first.count("/jobs/") > 50
    assert "j54" in first and "j04" not in first
    assert "cursor=" in first
    cursor = first.split("cursor=")[1].split('"')[0]
    second = web_alice.get(f"/jobs/?cursor={cursor}").content.decode()
    assert "j04" in second and "j00" in second and "j54" not in second
    assert "j00" not in web_alice.get("/jobs/?state=running").content.decode()


def test_mallory_gets_404_on_every_job_page(web_mallory, submit, sim_cluster):
    job = submit(sim_cluster)
    for method, url in [
        ("get", f"/jobs/{job.uuid}/"),
        ("get", f"/jobs/{job.uuid}/log/?offset=0"),
        ("get", f"/jobs/{job.uuid}/status/"),
        ("get", f"/jobs/{job.uuid}/results/"),
        ("get", f"/jobs/{job.uuid}/results/summary.txt"),
        ("post", f"/jobs/{job.uuid}/cancel/"),
    ]:
        assert getattr(web_mallory, method)(url).status_code == HTTPStatus.NOT_FOUND, url
    assert "train" not in web_mallory.get("/jobs/").content.decode()
    job.refresh_from_db()
    assert job.state == Job.State.PENDING


def test_the_dashboard_shows_balances_recent_jobs_and_the_usage_chart(
    web_alice, submit, sim, sim_cluster, allocation
):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "3600"})
    job_forward(job_id=job.pk)
    sim.advance(3600)
    cluster_sync(cluster=sim_cluster)
    page = web_alice.get("/")
    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert "997.89" in html  # 1000 - 2.11 charged
    assert job.name in html
    assert "chart-4.6.1.umd.min.js" in html
    chart = page.context["chart"]
    assert len(chart["labels"]) == 30
    assert chart["values"][-1] == pytest.approx(2.11)


def test_mallory_sees_none_of_alices_balances(web_mallory, allocation):
    page = web_mallory.get("/")
    assert page.status_code == HTTPStatus.OK
    assert page.context["allocations"] == []


def test_the_job_list_filters_by_part_of_the_name_in_any_case(web_alice, submit, sim_cluster):
    submit(sim_cluster, name="Train-ResNet", gpus=0)
    submit(sim_cluster, name="eval-bert", gpus=0)

    page = web_alice.get("/jobs/?name=resnet")

    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert "Train-ResNet" in html and "eval-bert" not in html
    assert 'value="resnet"' in html  # the filter stays filled in
    assert "No jobs match these filters" in web_alice.get("/jobs/?name=nothing").content.decode()


def test_the_job_list_shows_when_each_job_ended_and_how_long_it_ran(
    web_alice, submit, sim, sim_cluster
):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "5400"}, time_limit_minutes=120)
    job_forward(job_id=job.pk)
    sim.advance(5400)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.ended_at is not None

    html = web_alice.get("/jobs/").content.decode()

    assert "<th>Ended</th>" in html and "Runtime</th>" in html
    assert f"{job.ended_at:%Y-%m-%d %H:%M}" in html
    assert "1 h 30 min" in html


def test_the_api_job_list_filters_by_name(api_alice, submit, sim_cluster):
    submit(sim_cluster, name="Train-ResNet", gpus=0)
    submit(sim_cluster, name="eval-bert", gpus=0)

    response = api_alice.get("/api/v1/jobs/?name=RESNET")

    assert response.status_code == HTTPStatus.OK
    assert [row["name"] for row in response.json()["results"]] == ["Train-ResNet"]


def _project_page_data(tenant, cluster, alice, bob, extra: int) -> None:
    """`extra` more of everything the project page lists: allocations, grant requests, members
    with cluster accounts and open access requests, jobs."""
    for i in range(extra):
        member = factories.UserFactory(username=f"member{i}{extra}")
        ProjectMember.objects.create(project=tenant.project, user=member)
        ClusterAccount.objects.create(
            user=member, cluster=cluster, username=f"m{i}x{extra}", uid=2000 + i + 10 * extra
        )
        ClusterAccessRequest.objects.create(
            user=member, project=tenant.project, cluster=cluster, username=f"r{i}x{extra}"
        )
        factories.AllocationFactory(project=tenant.project, clusters=[cluster])
        request = AllocationRequest.objects.create(
            project=tenant.project,
            title=f"Grant {i} {extra}",
            amount=Decimal("0.0042"),
            start_date=date(2026, 1, 1),
            end_date=date(2026, 6, 30),
            justification="science",
            requested_by=alice,
        )
        request.clusters.add(cluster)


def test_the_project_page_shows_balance_allocations_requests_jobs_members_and_accounts(
    web_alice, alice, bob, tenant, submit, sim_cluster, allocation
):
    submit(sim_cluster, name="project-job", gpus=0)
    _project_page_data(tenant, sim_cluster, alice, bob, extra=1)

    page = web_alice.get(f"/projects/{tenant.project.uuid}/")

    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    for heading in ("Balance", "Allocations", "Grant requests", "Recent jobs", "Members"):
        assert f"<h2>{heading}</h2>" in html, heading
    assert "<h2>Cluster accounts</h2>" in html
    assert "project-job" in html
    assert "Grant 0 1" in html and "0.0042" in html  # a tiny amount is never shown as 0.00
    assert "2026-01-01 – 2026-06-30" in html  # a request's inclusive period
    assert "<code>m0x1</code>" in html and "<code>alice</code>" in html
    assert "<code>r0x1</code>" in html  # the open access request
    # alice's 1000 SU less the job's hold: the balance over active allocations
    assert page.context["sections"][0].context["available"] == allocation.available - (
        Job.objects.get(name="project-job").estimated_cost
    )


def test_the_project_page_costs_the_same_queries_with_more_to_show(
    web_alice, alice, bob, tenant, submit, sim_cluster, allocation
):
    submit(sim_cluster, name="first", gpus=0)
    _project_page_data(tenant, sim_cluster, alice, bob, extra=1)
    url = f"/projects/{tenant.project.uuid}/"
    web_alice.get(url)  # warm per-process caches (content types, sessions)
    with CaptureQueriesContext(connection) as few:
        assert web_alice.get(url).status_code == HTTPStatus.OK

    for i in range(4):
        submit(sim_cluster, name=f"more-{i}", gpus=0)
    _project_page_data(tenant, sim_cluster, alice, bob, extra=4)
    with CaptureQueriesContext(connection) as many:
        assert web_alice.get(url).status_code == HTTPStatus.OK

    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    assert len(few) <= 25


def test_an_org_admin_outside_the_project_sees_its_funding_but_not_its_jobs(
    tenant, submit, sim_cluster, allocation
):
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    Membership.objects.create(organization=tenant.org, user=carol, role=Membership.Role.ADMIN)
    submit(sim_cluster, name="private-job", gpus=0)

    page = signed_in(carol).get(f"/projects/{tenant.project.uuid}/")

    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert "<h2>Balance</h2>" in html
    assert "private-job" not in html and "<h2>Recent jobs</h2>" not in html


def test_mallory_gets_404_for_alices_project_page(web_mallory, tenant, allocation):
    assert web_mallory.get(f"/projects/{tenant.project.uuid}/").status_code == (
        HTTPStatus.NOT_FOUND
    )
