"""The first hour, alone, in a real browser at desktop width and at 390 px (no page scrolls
sideways, measured after every navigation): nobody sets anything up by hand for the person
arriving cold.

(a) A researcher signs up, creates an organization and a project, and requests a grant; a
reviewer made with the documented `manage.py staff_role` approves it; the researcher asks for
cluster access, the unix provisioner creates their Unix user on the dev Slurm 22.05 host, the
portal pushes their Slurm association, a job runs there as them, fails, shows its stderr, and
is resubmitted with changes and completes.

(b) A startup signs up, follows the dashboard's next-step buttons to a company organization, a
project and the self-serve trial, gets cluster access the same way, submits a job on the same
Slurm cluster and downloads the result file it wrote.

Everything runs for real: live_server, a Celery worker on Redis (provisioning, forwarding,
syncing, account pushes), the provisioning helper deploy/slurm/up.sh installs, slurmrestd and
slurmctld. What the test creates on the host (the Unix user, its folder, the Slurm account and
associations) is removed afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import User
from jobs.models import ClusterAccessRequest, ClusterAccount, Job
from jobs.provisioning import Identity, get_provisioner
from quotas.models import Allocation, AllocationRequest, Cluster, Trial
from quotas.policy import REVIEWERS_GROUP
from tests import factories
from tests.e2e.conftest import (
    OVERFLOW_TAG,
    Browser,
    SidewaysScroll,
    screenshot,
    sign_in,
    verified,
)
from tests.jobs.slurm.conftest import (  # noqa: F401 (fixtures used here)
    SlurmSite,
    _drop_accounts,
    sacct_field,
    slurm_cluster,
    slurm_site,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slurm]

WIDTHS = [1280, 390]
PASSPHRASE = "a long passphrase for a researcher 7"
HELPER = Path("/usr/local/sbin/gpuc-provision-user")
SCANCEL = shutil.which("scancel") or "/usr/bin/scancel"
FAILING = """#!/bin/bash
echo "reading input as $(id -un)"
echo "FileNotFoundError: input.csv" >&2
exit 3
"""
RESULT = """#!/bin/bash
echo "training as $(id -un)"
sleep 1
printf 'accuracy: 0.93\\n' > "$GPUC_OUTPUT_DIR/metrics.txt"
"""
FIXED = """#!/bin/bash
echo "reading input as $(id -un)"
sleep 2
echo "done"
"""


@pytest.fixture
def open_slurm(slurm_cluster: Cluster, slurm_site: SlurmSite) -> Iterator[Cluster]:  # noqa: F811
    """The facility's real Slurm cluster as its admin set it up, and nothing else: accounts
    approved automatically for members of a project with an active allocation there, made by
    the unix provisioner, and one Slurm account per project (with an association per member)
    pushed by the portal. Its account prefix is this test's own; afterwards the accounts, the
    Unix users the test provisioned and their folders are removed."""
    if os.geteuid() != 0 or not HELPER.exists():
        if os.environ.get("CI"):
            pytest.fail(
                "needs root and the provisioning helper deploy/slurm/up.sh installs"
                + " (CI runs as root after deploy/slurm/up.sh)"
            )
        pytest.skip("needs root and the provisioning helper deploy/slurm/up.sh installs")
    prefix = f"t{uuid.uuid4().hex[:8]}x"
    slurm_cluster.options = {
        **slurm_cluster.options,
        "access_policy": "auto",
        "provisioner": "unix",
        "manage_accounts": True,
        "slurm_cluster": slurm_site.cluster_name,
        "account_prefix": prefix,
    }
    slurm_cluster.save()
    try:
        yield slurm_cluster
    finally:
        _drop_accounts(slurm_site, prefix)
        for account in ClusterAccount.objects.filter(cluster=slurm_cluster).exclude(
            provision_key=""
        ):
            subprocess.run(  # noqa: S603 (fixed argv and a checked name)
                [SCANCEL, "-u", account.username], capture_output=True, timeout=30, check=False
            )
            provisioner = get_provisioner(account.cluster)
            assert provisioner is not None
            provisioner.remove(Identity(username=account.username, key=account.provision_key))
            folder = Path(slurm_site.shared_root) / account.username
            if folder.exists():
                shutil.rmtree(folder)


def _nav(page: Page, name: str) -> None:
    """Follow a link of the main navigation, opening its Menu first where a narrow screen
    folds the links away."""
    toggle = page.locator("header nav .nav-toggle-button")
    if toggle.count() and toggle.is_visible():
        toggle.click()
    page.locator("header nav").get_by_role("link", name=name, exact=True).first.click()
    page.wait_for_load_state()


def _reload_until(page: Page, locator: str, text: str, seconds: float = 40) -> None:
    """Reload the page until `locator` contains `text` (what a person waiting would do)."""
    deadline = time.monotonic() + seconds
    while True:
        target = page.locator(locator)
        if target.count() and text in target.first.inner_text():
            return
        assert time.monotonic() < deadline, f"{page.url}: {locator} never showed {text!r}"
        page.wait_for_timeout(500)
        page.reload()


def _sign_up(page: Page, live_server: Any, *, email: str, username: str) -> User:
    """Sign up through allauth's form and follow the emailed confirmation link."""
    page.goto("/")
    page.wait_for_url("**/accounts/login/**")
    page.get_by_role("link", name="Sign up").first.click()
    page.wait_for_url("**/accounts/signup/**")
    page.locator("input[name=email]").fill(email)
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password1]").fill(PASSPHRASE)
    page.locator("input[name=password2]").fill(PASSPHRASE)
    # Wait for the page's sideways-scroll report too (sent 50 ms after its load event): going
    # on to the emailed link at once would leave the page unmeasured.
    with page.expect_console_message(
        lambda m: (
            m.text.startswith(f"{OVERFLOW_TAG} ") and m.text.endswith("/accounts/confirm-email/")
        )
    ):
        page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/accounts/confirm-email/")
    sent = [m for m in mail.outbox if m.to == [email]]
    assert len(sent) == 1
    link = re.search(r"(http://\S+/accounts/confirm-email/\S+/)", sent[0].body)
    assert link is not None and link.group(1).startswith(live_server.url)
    page.goto(link.group(1))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"{live_server.url}/")
    expect(page.locator("h1")).to_have_text("Dashboard")
    return User.objects.get(username=username)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_researcher_signs_up_gets_a_grant_and_cluster_access_and_fixes_a_failed_job(
    browser: Browser,
    live_server: Any,
    width: int,
    open_slurm: Cluster,
    slurm_site: SlurmSite,  # noqa: F811
    worker: None,
) -> None:
    tag = uuid.uuid4().hex[:6]
    email = f"gpuce{tag}@uni.example"  # the Unix name is made from it: unique on the host
    page = browser()
    scroll = SidewaysScroll(page, width)

    # Signs up cold.
    researcher = _sign_up(page, live_server, email=email, username=f"rosa{tag}")

    # Creates an organization and a project in it.
    _nav(page, "Organizations")
    page.get_by_role("button", name="New organization").click()
    page.wait_for_url("**/organizations/new/")
    page.locator("#id_name").fill(f"Reef Lab {tag}")
    page.locator("#id_kind").select_option("academic")
    page.get_by_role("button", name="Create organization").click()
    page.wait_for_url(re.compile(r"/organizations/[0-9a-f-]{36}/$"))
    _nav(page, "Projects")
    page.get_by_role("button", name="New project").click()
    page.wait_for_url("**/projects/new/**")
    page.locator("#id_name").fill("Coral genomes")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/projects/[0-9a-f-]{36}/$"))
    expect(page.locator(".flash-success")).to_contain_text("you are its PI")

    # Requests a grant on the cluster and submits it for review.
    _nav(page, "Requests")
    page.get_by_role("button", name="New request").click()
    page.wait_for_url("**/allocation-requests/new/**")
    today = timezone.now().date()
    page.locator("#id_title").fill("Coral genome assembly")
    page.locator("#id_amount").fill("50000")
    page.get_by_label(f"{open_slurm} ({open_slurm.get_kind_display()})").check()
    page.locator("#id_start_date").fill(today.isoformat())
    page.locator("#id_end_date").fill((today + timedelta(days=90)).isoformat())
    page.locator("#id_justification").fill("Assembling forty coral genomes.")
    page.get_by_role("button", name="Save and submit").click()
    page.wait_for_url(re.compile(r"/allocation-requests/[0-9a-f-]{36}/$"))
    expect(page.locator("hgroup")).to_contain_text("Submitted")
    grant = AllocationRequest.objects.get(title="Coral genome assembly")
    assert grant.project.organization.memberships.filter(user=researcher).exists()

    # A reviewer, made one with the documented command, approves it.
    rita = verified(factories.UserFactory(username="rita", email="rita@facility.example"))
    call_command("staff_role", "rita", "reviewer")
    assert rita.groups.filter(name=REVIEWERS_GROUP).exists()
    reviewer = browser()
    reviewer_scroll = SidewaysScroll(reviewer, width)
    sign_in(reviewer, "rita")
    _nav(reviewer, "Review")
    reviewer.wait_for_url("**/review/")
    reviewer.get_by_role("link", name="Coral genome assembly").click()
    reviewer.wait_for_url(f"**/allocation-requests/{grant.uuid}/")
    reviewer.locator("#id_comment").fill("Approved for the assembly.")
    reviewer.get_by_role("button", name="Approve").click()
    reviewer.wait_for_url("**/review/")
    expect(reviewer.locator(".flash-success")).to_contain_text("Approved")
    assert reviewer_scroll.pages() == [
        "/accounts/login/",
        "/",
        "/review/",
        f"/allocation-requests/{grant.uuid}/",
        "/review/",
    ]
    grant.refresh_from_db()
    assert grant.state == AllocationRequest.State.APPROVED and grant.allocation is not None

    # The researcher sees the balance, asks for access to the cluster: approved at once (an
    # active allocation there), and the worker creates the Unix user through the helper.
    _nav(page, "Dashboard")
    balances = page.locator("main table").first.locator("tbody tr", has_text="Coral genomes")
    expect(balances.locator("td").last).to_have_text("50,000.00")
    _nav(page, "Cluster access")
    page.locator("#id_cluster").select_option(open_slurm.name)
    page.get_by_role("button", name="Request access").click()
    page.wait_for_url("**/access/")
    expect(page.locator(".flash-success")).to_contain_text("Approved: your account")
    _reload_until(page, "main section:last-of-type table", "Provisioned")
    account = ClusterAccount.objects.get(user=researcher, cluster=open_slurm)
    assert account.username == email.partition("@")[0] and account.uid >= 1000
    expect(page.locator("main table").first).to_contain_text(account.username)
    request = ClusterAccessRequest.objects.get(user=researcher)
    assert request.state == ClusterAccessRequest.State.PROVISIONED and request.automatic
    assert subprocess.run(["id", "-u", account.username], capture_output=True).returncode == 0  # noqa: S603, S607
    screenshot(page, f"journey-a-access-{width}")

    # Submits at once: provisioning queued the push of the project's Slurm account, and a job
    # that reaches Slurm before the association does waits in the portal, not rejected.
    # Submits a job that fails on the cluster: the page shows why, with stderr open.
    _nav(page, "Submit")
    page.locator("#id_cluster").select_option(open_slurm.name)
    page.locator("#id_name").fill("assemble")
    page.locator("#id_script").fill(FAILING)
    page.locator("#id_gpus").fill("0")
    page.locator("#id_cpus").fill("1")
    page.locator("#id_memory_mb").fill("128")
    page.locator("#id_time_limit_minutes").fill("2")
    page.locator("#id_time_limit_minutes").press("Tab")
    expect(page.locator("#estimate")).to_contain_text("Estimated cost")
    scroll.check()
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    failed = Job.objects.get(name="assemble")
    _reload_until(page, ".job-failure", "Failed with exit code 3.", seconds=60)
    failed.refresh_from_db()
    assert failed.state == Job.State.FAILED and failed.cluster_username == account.username
    assert sacct_field(slurm_site, failed.backend_id, "User") == account.username
    stderr, stdout = page.locator("#log-stderr"), page.locator("#log-stdout")
    expect(stderr).to_be_visible()
    expect(stderr).to_contain_text("FileNotFoundError: input.csv")
    expect(stdout).to_be_hidden()
    screenshot(page, f"journey-a-failed-{width}")
    page.locator("label[for=tab-stdout]").click()
    expect(stdout).to_have_text(f"reading input as {account.username}\n")

    # Resubmits it with changes: the form opens filled in; the fixed job completes.
    page.get_by_role("button", name="Resubmit with changes").click()
    page.wait_for_url(f"**/jobs/new/?from={failed.uuid}")
    expect(page.locator("#id_script")).to_have_value(FAILING)
    expect(page.locator("#id_time_limit_minutes")).to_have_value("2")
    page.locator("#id_script").fill(FIXED)
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    fixed = Job.objects.exclude(pk=failed.pk).get(name="assemble")
    assert page.url.endswith(f"/jobs/{fixed.uuid}/")
    expect(page.locator("#job-status .cards .badge")).to_have_text("Completed", timeout=60_000)
    expect(page.locator("#log-stdout")).to_have_text(f"reading input as {account.username}\ndone\n")
    deadline = time.monotonic() + 30
    while fixed.finalized_at is None:  # charged from Slurm's accounting once it ends
        assert time.monotonic() < deadline, "the worker never charged the job"
        time.sleep(0.3)
        fixed.refresh_from_db()
    assert (fixed.cpus, fixed.memory_mb, fixed.time_limit_minutes) == (1, 128, 2)
    assert fixed.elapsed_seconds >= 2
    assert fixed.charged_cost == Decimal(fixed.elapsed_seconds)  # 1 CPU at 1 SU per second
    screenshot(page, f"journey-a-fixed-{width}")

    visited = scroll.pages()
    for path in (
        "/accounts/signup/",
        "/accounts/confirm-email/",
        "/projects/",
        "/organizations/new/",
        "/",
        "/projects/new/",
        "/allocation-requests/new/",
        "/access/",
        "/jobs/new/",
        f"/jobs/{failed.uuid}/",
        f"/jobs/new/?from={failed.uuid}",
        f"/jobs/{fixed.uuid}/",
    ):
        assert any(v == path or v.startswith(f"{path}?") for v in visited), (
            f"{path} was not measured: {visited}"
        )


def _next_step(page: Page, label: str) -> None:
    """From the dashboard, press the next-step button the portal offers."""
    _nav(page, "Dashboard")
    page.locator("#next-steps").get_by_role("button", name=label).click()
    page.wait_for_load_state()


@pytest.mark.parametrize("width", WIDTHS)
def test_a_startup_signs_up_starts_a_trial_submits_and_downloads_a_result(
    browser: Browser,
    live_server: Any,
    width: int,
    open_slurm: Cluster,
    slurm_site: SlurmSite,  # noqa: F811
    worker: None,
    settings: Any,
) -> None:
    settings.GPUC_TRIAL_SU, settings.GPUC_TRIAL_DAYS = 500, 14  # the facility's trial
    tag = uuid.uuid4().hex[:6]
    email = f"gpucs{tag}@glimmer.example"
    page = browser()
    scroll = SidewaysScroll(page, width)

    founder = _sign_up(page, live_server, email=email, username=f"sam{tag}")
    expect(page.locator("#next-steps")).to_contain_text("You do not belong to an organization")

    _next_step(page, "Create an organization")
    page.locator("#id_name").fill(f"Glimmer AI {tag}")
    page.locator("#id_kind").select_option("company")
    page.get_by_role("button", name="Create organization").click()
    page.wait_for_url(re.compile(r"/organizations/[0-9a-f-]{36}/$"))

    _next_step(page, "Create a project")
    page.locator("#id_name").fill("Vision API")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/projects/[0-9a-f-]{36}/$"))

    # Starts the organization's trial from the dashboard.
    _next_step(page, f"Start a free trial for Glimmer AI {tag}")
    expect(page.locator("#trial")).to_contain_text(
        re.compile(r"500(\.0+)? SU to spend over 14 days")
    )
    expect(page.locator("#trial")).to_contain_text("The SU go to project Vision API")
    page.get_by_role("button", name="Start the trial").click()
    page.wait_for_url(re.compile(r"/allocations/[0-9a-f-]{36}/$"))
    expect(page.locator(".flash-success")).to_contain_text("Trial started: 500 SU for Vision API")
    available = page.locator(".card", has_text="Available").locator(".figure")
    expect(available).to_have_text(re.compile(r"^500(\.0+)? SU$"))
    screenshot(page, f"journey-b-trial-{width}")

    # Asks for cluster access (automatic: the trial is an active allocation there).
    _next_step(page, "Request cluster access")
    page.wait_for_url("**/access/")
    page.locator("#id_cluster").select_option(open_slurm.name)
    page.get_by_role("button", name="Request access").click()
    page.wait_for_url("**/access/")
    _reload_until(page, "main section:last-of-type table", "Provisioned")
    account = ClusterAccount.objects.get(user=founder, cluster=open_slurm)
    assert account.username == email.partition("@")[0] and account.uid >= 1000

    # Submits a job and downloads what it wrote.
    _nav(page, "Dashboard")
    expect(page.locator("#next-steps")).to_have_count(0)  # nothing missing any more
    page.locator("main hgroup").get_by_role("button", name="Submit a job").click()
    page.wait_for_url("**/jobs/new/")
    page.locator("#id_cluster").select_option(open_slurm.name)
    page.locator("#id_name").fill("train")
    page.locator("#id_script").fill(RESULT)
    page.locator("#id_gpus").fill("0")
    page.locator("#id_cpus").fill("1")
    page.locator("#id_memory_mb").fill("128")
    page.locator("#id_time_limit_minutes").fill("2")
    page.locator("#id_time_limit_minutes").press("Tab")
    expect(page.locator("#estimate")).to_contain_text(re.compile(r"Estimated cost: 120(\.0+)? SU"))
    scroll.check()
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    job = Job.objects.get(name="train")
    expect(page.locator("#job-status .cards .badge")).to_have_text("Completed", timeout=60_000)
    expect(page.locator("#log-stdout")).to_have_text(f"training as {account.username}\n")
    with page.expect_download() as download:
        page.locator("#job-results").get_by_role("link", name="metrics.txt").click()
    assert download.value.suggested_filename == "metrics.txt"
    assert Path(download.value.path()).read_bytes() == b"accuracy: 0.93\n"
    scroll.check()
    screenshot(page, f"journey-b-result-{width}")

    deadline = time.monotonic() + 30
    while job.finalized_at is None:
        assert time.monotonic() < deadline, "the worker never charged the job"
        time.sleep(0.3)
        job.refresh_from_db()
    trial = Trial.objects.get(organization=job.project.organization)
    assert (trial.started_by, trial.allocation.kind) == (founder, Allocation.Kind.TRIAL)
    trial.allocation.refresh_from_db()
    assert trial.allocation.charged == job.charged_cost  # the trial paid for the job
    assert job.charged_cost == Decimal(job.elapsed_seconds) > 0  # 1 CPU at 1 SU per second
    _nav(page, "Dashboard")
    row = page.locator("main table").first.locator("tbody tr", has_text="Vision API")
    expect(row.locator("td").last).to_have_text(f"{Decimal(500) - job.charged_cost:,.2f}")

    visited = scroll.pages()
    for path in (
        "/accounts/signup/",
        "/organizations/new/",
        "/projects/new/",
        f"/organizations/{job.project.organization.uuid}/trial/",
        f"/allocations/{job.project.allocations.get().uuid}/",
        "/access/",
        "/jobs/new/",
        f"/jobs/{job.uuid}/",
    ):
        assert any(v == path or v.startswith(f"{path}?") for v in visited), (
            f"{path} was not measured: {visited}"
        )
