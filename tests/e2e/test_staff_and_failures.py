"""In a real browser, at desktop width and at 390 px (no sideways scroll): a facility admin finds
a user by email, opens one of their running jobs, cancels it, suspends the allocation, and the
tenant sees why on their dashboard; a failed job shows its stderr and is resubmitted with
changes from a prefilled form. Every page each browser loads is measured for sideways scroll
(SidewaysScroll), and again after in-place updates."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from accounts.models import User
from jobs.drafts import JobDraft
from jobs.models import Job, JobEvent
from jobs.services import job_submit
from quotas.models import Allocation, Cluster
from quotas.policy import FACILITY_ADMINS_GROUP
from tests import factories
from tests.e2e.conftest import Browser, SidewaysScroll, screenshot, sign_in, verified

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = [1280, 390]
WAITING = """#!/bin/bash
echo "working"
sleep 300
"""
FAILING = """#!/bin/bash
echo "loading data"
echo "Traceback: FileNotFoundError: data.csv" >&2
exit 3
"""


def _wait_for_state(job: Job, state: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job.name} is {job.state}, not {state}")


def _submit(alice: User, tenant: Any, cluster: Cluster, name: str, script: str) -> Job:
    return job_submit(
        user=alice,
        project=tenant.project,
        cluster=cluster,
        draft=JobDraft(
            name=name, script=script, gpus=0, cpus=1, memory_mb=256, time_limit_minutes=10
        ),
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_an_admin_finds_a_user_cancels_their_job_suspends_and_the_tenant_sees_why(
    browser: Browser,
    width: int,
    alice: User,
    tenant: Any,
    local_cluster: Cluster,
    local_allocation: Allocation,
    celery_worker: None,
) -> None:
    dave = factories.UserFactory(username="dave", email="dave@facility.example")
    dave.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    job = _submit(alice, tenant, local_cluster, "long-run", WAITING)
    _wait_for_state(job, Job.State.RUNNING)
    staff = browser()
    staff_scroll = SidewaysScroll(staff, width)
    sign_in(staff, verified(dave).username)

    staff.goto("/manage/")
    staff.get_by_role("searchbox").fill("alice@uni.example")
    staff.get_by_role("button", name="Search").click()
    staff.locator("#people").get_by_role("link", name="alice").click()
    staff.wait_for_url("**/manage/users/alice/")
    staff.get_by_role("link", name="long-run").click()
    staff.wait_for_url(f"**/manage/jobs/{job.uuid}/")
    expect(staff.locator("#log-stdout")).to_have_text("working\n")
    staff_scroll.check()
    screenshot(staff, f"staff-job-{width}")
    staff.once("dialog", lambda dialog: dialog.accept())
    staff.get_by_role("button", name="Cancel job (as staff)").click()
    expect(staff.locator(".flash").first).to_contain_text("Cancellation requested")
    _wait_for_state(job, Job.State.CANCELLED)
    assert JobEvent.objects.filter(job=job, actor=dave, message__contains="staff").exists()

    # From the job to its project, and to the allocation that pays for it.
    staff.locator("main").get_by_role("link", name=tenant.project.name).first.click()
    staff.wait_for_url(f"**/manage/projects/{tenant.project.uuid}/")
    staff.locator("main").get_by_role(
        "link", name=re.compile(str(local_allocation.uuid)[:8])
    ).click()
    staff.wait_for_url(f"**/manage/allocations/{local_allocation.uuid}/")
    staff.locator("input[name=reason]").fill("Unpaid invoice INV-7: contact billing@facility")
    staff.get_by_role("button", name="Suspend").click()
    expect(staff.locator(".flash").first).to_contain_text("Suspended")
    local_allocation.refresh_from_db()
    assert local_allocation.status == Allocation.Status.SUSPENDED
    staff_pages = staff_scroll.pages()
    for path in (
        "/manage/",
        "/manage/?q=alice%40uni.example",
        "/manage/users/alice/",
        f"/manage/jobs/{job.uuid}/",
        f"/manage/projects/{tenant.project.uuid}/",
        f"/manage/allocations/{local_allocation.uuid}/",
    ):
        assert any(p == path or p.startswith(f"{path}?") for p in staff_pages), (
            f"{path} was not measured: {staff_pages}"
        )

    tenant_page = browser()
    tenant_scroll = SidewaysScroll(tenant_page, width)
    sign_in(tenant_page, verified(alice).username)
    notice = tenant_page.locator("#suspended")
    expect(notice).to_contain_text("Unpaid invoice INV-7: contact billing@facility")
    screenshot(tenant_page, f"suspended-dashboard-{width}")
    tenant_page.goto(f"/jobs/{job.uuid}/")
    expect(tenant_page.locator("ol.timeline")).to_contain_text("by facility staff")
    assert tenant_scroll.pages() == ["/accounts/login/", "/", f"/jobs/{job.uuid}/"]


@pytest.mark.parametrize("width", WIDTHS)
def test_a_failed_job_shows_stderr_and_is_resubmitted_with_changes(
    browser: Browser,
    width: int,
    alice: User,
    tenant: Any,
    local_cluster: Cluster,
    local_allocation: Allocation,
    celery_worker: None,
) -> None:
    job = _submit(alice, tenant, local_cluster, "prep", FAILING)
    _wait_for_state(job, Job.State.FAILED)
    page = browser()
    scroll = SidewaysScroll(page, width)
    sign_in(page, verified(alice).username)

    page.goto(f"/jobs/{job.uuid}/")
    expect(page.locator(".job-failure")).to_contain_text("Failed with exit code 3.")
    stderr, stdout = page.locator("#log-stderr"), page.locator("#log-stdout")
    expect(stderr).to_be_visible()
    expect(stderr).to_contain_text("FileNotFoundError: data.csv")
    expect(stdout).to_be_hidden()
    expect(page.get_by_text("(live)")).to_have_count(0)
    scroll.check()
    screenshot(page, f"failed-job-{width}")
    page.locator("label[for=tab-stdout]").click()
    expect(stdout).to_be_visible()
    expect(stdout).to_have_text("loading data\n")
    expect(stderr).to_be_hidden()

    page.get_by_role("button", name="Resubmit with changes").click()
    page.wait_for_url(f"**/jobs/new/?from={job.uuid}")
    script = page.locator("#id_script")
    expect(script).to_have_value(FAILING)
    expect(page.locator("#id_name")).to_have_value("prep")
    script.fill("#!/bin/bash\necho 'loading data'\necho done\n")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url("**/jobs/*/")
    again = Job.objects.exclude(pk=job.pk).get()
    assert (again.name, again.cpus, again.memory_mb) == ("prep", 1, 256)
    _wait_for_state(again, Job.State.COMPLETED)
    assert scroll.pages() == [
        "/accounts/login/",
        "/",
        f"/jobs/{job.uuid}/",
        f"/jobs/new/?from={job.uuid}",
        f"/jobs/{again.uuid}/",
    ]
