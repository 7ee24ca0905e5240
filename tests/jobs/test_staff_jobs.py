"""The staff area's people and jobs: find a person by name or email, open their page, list and
open any tenant's job read-only, cancel it through the owner's service (the timeline names who
did), follow a ledger entry to its job. Everyone else gets a 404."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from jobs.models import Job, JobEvent
from jobs.services import cluster_sync, job_forward
from quotas.models import LedgerEntry
from quotas.policy import FACILITY_ADMINS_GROUP
from tests import factories
from tests.conftest import signed_in


@pytest.fixture
def dave(db):
    """A facility admin (group member, not Django staff), in no tenant."""
    user = factories.UserFactory(
        username="dave", email="dave@facility.example", first_name="Dave", last_name="Ops"
    )
    user.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    return user


@pytest.fixture
def staff(dave) -> Client:
    return signed_in(dave)


@pytest.fixture
def job(submit, sim_cluster) -> Job:
    return submit(sim_cluster)


def test_staff_find_a_person_by_email_or_name_and_open_their_page(
    staff, alice, tenant, mallory, job
):
    alice.first_name, alice.last_name = "Alice", "Liddell"
    alice.save()

    by_email = staff.get("/manage/?q=alice@uni").content.decode()
    by_name = staff.get("/manage/?q=alice liddell").content.decode()

    assert "/manage/users/alice/" in by_email
    assert "/manage/users/alice/" in by_name
    assert "mallory" not in by_email
    assert "facility-admin" in staff.get("/manage/users/dave/").content.decode()
    page = staff.get("/manage/users/alice/")
    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert tenant.org.name in html and tenant.project.name in html
    assert f"/manage/jobs/{job.uuid}/" in html
    assert "sim: <code>alice</code>" in html


def test_staff_list_any_tenants_jobs_by_person_project_and_state(
    staff, job, submit, sim_cluster, bob, tenant
):
    submit(sim_cluster, name="bobs", user=bob)

    everything = staff.get("/manage/jobs/").content.decode()
    alices = staff.get("/manage/jobs/?user=alice").content.decode()
    by_project = staff.get(f"/manage/jobs/?project={tenant.project.uuid}&state=pending")

    assert f"/manage/jobs/{job.uuid}/" in everything and "bobs" in everything
    assert f"/manage/jobs/{job.uuid}/" in alices and "bobs" not in alices
    assert len(by_project.context["jobs"]) == 2
    assert staff.get("/manage/jobs/?project=not-a-uuid").context["jobs"] == []
    assert staff.get("/manage/jobs/?state=running").context["jobs"] == []
    org_page = staff.get(f"/manage/organizations/{tenant.org.uuid}/").content.decode()
    assert f"/manage/jobs/?organization={tenant.org.uuid}" in org_page
    by_org = staff.get(f"/manage/jobs/?organization={tenant.org.uuid}")
    assert len(by_org.context["jobs"]) == 2


def test_staff_job_list_shows_when_each_job_ended_and_how_long_it_ran(staff, job):
    ended = timezone.now().replace(microsecond=0)
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.COMPLETED,
        started_at=ended - timedelta(hours=3, minutes=4, seconds=9),
        ended_at=ended,
    )

    html = staff.get("/manage/jobs/").content.decode()

    assert "<th>Ended</th>" in html and ">Runtime</th>" in html
    assert f'<time datetime="{ended.isoformat()}">{ended:%Y-%m-%d %H:%M}</time>' in html
    assert '<td class="num">3 h 04 min</td>' in html


def test_the_job_page_says_how_long_the_job_ran_in_words(alice, job):
    ended = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.COMPLETED,
        started_at=ended - timedelta(minutes=12, seconds=5),
        ended_at=ended,
        elapsed_seconds=725,
    )

    html = signed_in(alice).get(f"/jobs/{job.uuid}/").content.decode()

    assert "ran 12 min 5 s" in html and "for 12 min 5 s" in html
    assert "725 s" not in html


def test_staff_open_a_failed_job_read_only_with_its_stderr(staff, submit, sim, sim_cluster):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "5", "SIM_EXIT_CODE": "2"})
    job_forward(job_id=job.pk)
    sim.advance(5)
    cluster_sync(cluster=sim_cluster)

    page = staff.get(f"/manage/jobs/{job.uuid}/")

    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert "Failed with exit code 2." in html
    assert '<pre class="log" id="log-stderr">exit code 2\n</pre>' in html
    assert "Cancel job" not in html  # it has ended
    assert "<form" not in html.split("Timeline")[0].split("job-failure")[1]


def test_staff_cancel_a_running_job_through_the_cancel_service_and_the_timeline_names_them(
    staff, dave, submit, sim, sim_cluster
):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "600"})
    job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    assert "Cancel job (as staff)" in staff.get(f"/manage/jobs/{job.uuid}/").content.decode()

    response = staff.post(f"/manage/jobs/{job.uuid}/cancel/")
    cluster_sync(cluster=sim_cluster)

    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == f"/manage/jobs/{job.uuid}/"
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    event = JobEvent.objects.get(job=job, message="Cancellation requested by facility staff")
    assert event.actor == dave


def test_staff_cancel_a_pending_job_and_its_hold_is_released(staff, dave, job, allocation):
    staff.post(f"/manage/jobs/{job.uuid}/cancel/")

    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert JobEvent.objects.get(job=job, to_state=Job.State.CANCELLED).actor == dave
    allocation.refresh_from_db()
    assert allocation.held == 0


def test_the_owner_sees_who_cancelled_on_their_job_page(staff, job, alice):
    staff.post(f"/manage/jobs/{job.uuid}/cancel/")

    page = signed_in(alice).get(f"/jobs/{job.uuid}/").content.decode()

    assert "Cancelled by facility staff before it reached the cluster" in page
    assert "by dave" in page


def test_a_ledger_entry_links_to_its_job_for_staff_and_for_the_tenant(
    staff, alice, job, allocation
):
    assert LedgerEntry.objects.filter(job_uuid=job.uuid).exists()

    staff_page = staff.get(f"/manage/allocations/{allocation.uuid}/").content.decode()
    tenant_page = signed_in(alice).get(f"/allocations/{allocation.uuid}/").content.decode()

    assert f'href="/manage/jobs/{job.uuid}/"' in staff_page
    assert f'href="/jobs/{job.uuid}/"' in tenant_page


def test_the_staff_people_and_job_pages_are_404_for_everyone_else(
    alice, bob, mallory, mallory_tenant, job
):
    for user in (alice, bob, mallory):
        client = signed_in(user)
        for url in (
            "/manage/?q=alice",
            "/manage/users/alice/",
            "/manage/jobs/",
            f"/manage/jobs/{job.uuid}/",
        ):
            assert client.get(url).status_code == HTTPStatus.NOT_FOUND, (user, url)
        response = client.post(f"/manage/jobs/{job.uuid}/cancel/")
        assert response.status_code == HTTPStatus.NOT_FOUND
    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    anonymous = Client().get("/manage/jobs/")
    assert anonymous.status_code == HTTPStatus.FOUND  # to the sign-in page


def test_unknown_people_and_jobs_are_404_for_staff_too(staff):
    assert staff.get("/manage/users/nobody/").status_code == HTTPStatus.NOT_FOUND
    missing = "/manage/jobs/00000000-0000-0000-0000-000000000000/"
    assert staff.get(missing).status_code == HTTPStatus.NOT_FOUND
