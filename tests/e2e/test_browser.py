"""The portal in a real browser: headless Chromium driven by Playwright against live_server.

Jobs run on a local-backend cluster (real subprocesses), forwarded and synced by a real Celery
worker on Redis; everything the browser shows comes from the pages and their htmx partials.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import User
from jobs.models import ClusterAccount, Job
from quotas.models import Allocation, AllocationRequest, Cluster, LedgerEntry
from quotas.policy import REVIEWERS_GROUP
from quotas.services import ledger_hold, ledger_settle
from tests import factories
from tests.e2e.conftest import PASSWORD, Browser, screenshot, sign_in, verified

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "a long passphrase for carol 42"
# Waits for the job in a file the test creates, so the page is provably open before the line
# under test is printed: the log tail must bring it in without a reload.
SCRIPT = """#!/bin/bash
echo "started"
until [ -e go ]; do sleep 0.1; done
echo "hello from the browser"
printf 'answer: 42\\n' > output/result.txt
"""


def _mark(page: Page) -> None:
    """Tag the current document: the tag survives htmx swaps but not a reload or navigation."""
    page.evaluate("window.__e2e_marker = 'same document'")


def _not_reloaded(page: Page) -> bool:
    return page.evaluate("window.__e2e_marker") == "same document"


def test_a_new_user_signs_up_follows_the_emailed_link_and_lands_signed_in_on_the_dashboard(
    browser: Browser, live_server: Any
) -> None:
    page = browser()
    page.goto("/")
    page.get_by_role("link", name="Sign up").click()
    page.locator("input[name=email]").fill("carol@uni.example")
    page.locator("input[name=username]").fill("carol")
    page.locator("input[name=password1]").fill(NEW_PASSWORD)
    page.locator("input[name=password2]").fill(NEW_PASSWORD)
    screenshot(page, "signup")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/accounts/confirm-email/")
    expect(page.locator("h1")).to_have_text("Verify Your Email Address")

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["carol@uni.example"]
    link = re.search(r"(http://\S+/accounts/confirm-email/\S+/)", mail.outbox[0].body)
    assert link is not None
    assert link.group(1).startswith(live_server.url)

    page.goto(link.group(1))
    expect(page.locator("main")).to_contain_text("carol@uni.example")
    page.get_by_role("button", name="Confirm").click()

    page.wait_for_url(f"{live_server.url}/")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("main")).to_contain_text("Welcome, carol.")
    expect(page.locator(".topbar summary")).to_have_text("carol")
    user = User.objects.get(username="carol")
    assert user.emailaddress_set.get().verified


def test_alice_prices_submits_and_follows_a_job_live_then_downloads_its_result_and_sees_the_charge(
    browser: Browser,
    live_server: Any,
    alice: User,
    tenant: Any,
    local_cluster: Cluster,
    local_allocation: Allocation,
    celery_worker: None,
) -> None:
    verified(alice)
    page = browser()
    sign_in(page, "alice")

    page.get_by_role("link", name="Submit", exact=True).click()
    page.wait_for_url("**/jobs/new/")
    page.locator("#id_project").select_option(str(tenant.project.uuid))
    page.locator("#id_cluster").select_option("local")
    page.locator("#id_name").fill("browser-job")
    page.locator("#id_script").fill(SCRIPT)
    estimate = page.locator("#estimate")
    # 1 CPU × 1 h × 3600 SU (the form's defaults, jobs.drafts: no GPU, 1 CPU, 1 h)
    expect(estimate).to_contain_text("Estimated cost: 3,600.00 SU")
    _mark(page)

    page.locator("#id_gpus").fill("2")
    page.locator("#id_gpus").press("Tab")
    expect(estimate).to_contain_text("Estimated cost: 18,000.00 SU")
    page.locator("#id_time_limit_minutes").fill("30")
    page.locator("#id_time_limit_minutes").press("Tab")
    expect(estimate).to_contain_text("Estimated cost: 9,000.00 SU")
    expect(estimate).to_contain_text("GPU-hour")
    screenshot(page, "submit")
    assert _not_reloaded(page)  # htmx swapped the estimate in place

    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    job = Job.objects.get(name="browser-job")
    assert page.url == f"{live_server.url}/jobs/{job.uuid}/"
    assert (job.gpus, job.time_limit_minutes, job.estimated_cost) == (2, 30, Decimal(9000))
    assert job.script == SCRIPT  # the browser's CRLF line breaks are stored as LF
    expect(page.locator(".flash-success")).to_have_text("Job browser-job submitted.")
    _mark(page)

    log = page.locator("#log-stdout")
    status = page.locator("#job-status")
    expect(status.locator(".cards .badge")).to_have_text("Running")  # the page polls its status
    expect(log).to_have_text("started\n")  # ... and its log
    job_dir = Path(local_cluster.options["root"]) / str(job.uuid)
    (job_dir / "go").touch()  # only now does the job print its second line
    expect(log).to_have_text("started\nhello from the browser\n")
    expect(status.locator("ol.timeline .badge-completed")).to_have_text("completed")
    expect(status.locator(".cards .badge")).to_have_text("Completed")
    timeline = status.locator("ol.timeline .badge").all_inner_texts()
    assert timeline == ["pending", "queued", "running", "completed"]
    assert _not_reloaded(page)
    screenshot(page, "job")

    with page.expect_download() as download:
        page.locator("#job-results").get_by_role("link", name="result.txt").click()
    assert download.value.suggested_filename == "result.txt"
    assert Path(download.value.path()).read_bytes() == b"answer: 42\n"

    job.refresh_from_db()
    local_allocation.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    assert job.charged_cost is not None and job.charged_cost > 0
    # 2 GPUs × 2 SU/s + 1 CPU × 1 SU/s for the seconds it ran
    assert job.charged_cost == Decimal(5 * job.elapsed_seconds)
    assert local_allocation.charged == job.charged_cost
    expect(status).to_contain_text(f"charged {job.charged_cost:,.2f}")

    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(f"{live_server.url}/")
    row = page.locator("main table").first.locator("tbody tr", has_text=tenant.project.name)
    cells = row.locator("td").all_inner_texts()
    assert cells[3:] == [
        "100,000.00",
        "0.00",
        f"{job.charged_cost:,.2f}",
        f"{local_allocation.available:,.2f}",
    ]
    expect(page.locator("main")).to_contain_text(f"last 30 days: {job.charged_cost:,.2f} SU")
    recent = page.locator("main section", has_text="Recent jobs")
    expect(recent.get_by_role("link", name="browser-job")).to_be_visible()
    bars = page.evaluate("Chart.getChart('usage-chart').data.datasets[0].data")
    assert len(bars) == 30
    assert bars[-1] == float(job.charged_cost)
    assert sum(bars[:-1]) == 0
    screenshot(page, "dashboard")


def test_a_pi_requests_an_allocation_a_reviewer_approves_it_and_the_pi_sees_the_new_balance(
    browser: Browser, alice: User, tenant: Any, cluster: Cluster
) -> None:
    verified(alice)
    rita = verified(factories.UserFactory(username="rita", email="rita@facility.example"))
    rita.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    today = timezone.now().date()
    pi = browser()
    sign_in(pi, "alice")

    pi.get_by_role("link", name="Requests").click()
    pi.get_by_role("button", name="New request").click()
    pi.wait_for_url("**/allocation-requests/new/")
    pi.locator("#id_project").select_option(str(tenant.project.uuid))
    pi.locator("#id_title").fill("Folding at scale")
    pi.locator("#id_amount").fill("5000")
    pi.get_by_label(f"{cluster} ({cluster.get_kind_display()})").check()
    pi.locator("#id_start_date").fill(today.isoformat())
    pi.locator("#id_end_date").fill((today + timedelta(days=180)).isoformat())
    pi.locator("#id_justification").fill("Ten thousand folds of a hundred proteins.")
    pi.locator("#id_funder").fill("NSF")
    pi.locator("#id_award_number").fill("OAC-123")
    pi.get_by_role("button", name="Save draft").click()

    pi.wait_for_url(re.compile(r"/allocation-requests/[0-9a-f-]{36}/$"))
    expect(pi.locator(".flash-success")).to_contain_text("Draft saved")
    expect(pi.locator("hgroup")).to_contain_text("Draft")
    request = AllocationRequest.objects.get(title="Folding at scale")
    assert request.state == AllocationRequest.State.DRAFT
    pi.get_by_role("button", name="Submit for review").click()
    expect(pi.locator(".flash-success")).to_contain_text("Request submitted")
    expect(pi.locator("hgroup")).to_contain_text("Submitted")
    request.refresh_from_db()
    assert request.state == AllocationRequest.State.SUBMITTED

    reviewer = browser()
    sign_in(reviewer, "rita")
    reviewer.get_by_role("link", name="Review").click()
    reviewer.wait_for_url("**/review/")
    queued = reviewer.locator("main table tbody tr", has_text="Folding at scale")
    expect(queued).to_contain_text("Vision Lab / Protein folding")
    expect(queued).to_contain_text("OAC-123")
    queued.get_by_role("link", name="Folding at scale").click()
    expect(reviewer.locator("#id_amount")).to_have_value("5000.0000")
    screenshot(reviewer, "request-review")
    reviewer.locator("#id_comment").fill("Well justified.")
    reviewer.get_by_role("button", name="Approve").click()
    reviewer.wait_for_url("**/review/")
    expect(reviewer.locator(".flash-success")).to_contain_text("Approved")
    expect(reviewer.locator("main table tbody")).to_contain_text("Nothing here.")

    request.refresh_from_db()
    assert request.state == AllocationRequest.State.APPROVED
    assert request.allocation is not None
    pi.reload()
    expect(pi.locator("hgroup")).to_contain_text("Approved")
    expect(pi.locator("ol.timeline")).to_contain_text("Well justified.")
    pi.locator("dd a", has_text=str(request.allocation.uuid)).click()
    pi.wait_for_url(f"**/allocations/{request.allocation.uuid}/")
    available = pi.locator(".card", has_text="Available").locator(".figure")
    expect(available).to_have_text("5,000.00 SU")
    screenshot(pi, "allocation")
    pi.get_by_role("link", name="Dashboard").click()
    row = pi.locator("main table").first.locator("tbody tr", has_text="Protein folding")
    expect(row.locator("td").last).to_have_text("5,000.00")


def test_mallory_signed_in_gets_404_pages_for_the_job_and_project_urls_alice_can_open(
    browser: Browser,
    alice: User,
    tenant: Any,
    allocation: Allocation,
    cluster: Cluster,
    mallory: User,
    mallory_tenant: Any,
    purge_broker: None,
) -> None:
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    job = factories.submitted_job(
        user=alice, project=tenant.project, cluster=cluster, name="secret-training"
    )
    urls = [
        f"/jobs/{job.uuid}/",
        f"/jobs/{job.uuid}/status/",
        f"/jobs/{job.uuid}/log/",
        f"/jobs/{job.uuid}/results/",
        f"/projects/{tenant.project.uuid}/",
        f"/organizations/{tenant.org.uuid}/",
        f"/allocations/{allocation.uuid}/",
    ]
    owner = browser()
    sign_in(owner, verified(alice).username)
    seen_by_alice = {url: owner.goto(url).status for url in urls}
    intruder = browser()
    sign_in(intruder, verified(mallory).username)
    csrf = intruder.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")

    seen_by_mallory = {}
    for url in urls:
        seen_by_mallory[url] = intruder.goto(url).status
        assert "secret-training" not in intruder.content()
        assert "Protein folding" not in intruder.content()
    cancel = intruder.request.post(f"/jobs/{job.uuid}/cancel/", headers={"X-CSRFToken": csrf})

    assert seen_by_alice == dict.fromkeys(urls, HTTPStatus.OK)
    assert seen_by_mallory == dict.fromkeys(urls, HTTPStatus.NOT_FOUND)
    assert cancel.status == HTTPStatus.NOT_FOUND
    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert not job.events.filter(to_state=Job.State.CANCELLED).exists()


def test_the_dashboard_charts_the_su_charged_on_each_of_the_last_30_days(
    browser: Browser,
    alice: User,
    tenant: Any,
    allocation: Allocation,
    cluster: Cluster,
    purge_broker: None,
) -> None:
    now = timezone.now()
    charged = {0: "12.5", 1: "30", 3: "18.25", 6: "41", 10: "25", 14: "8", 20: "33", 29: "15"}
    for days_ago, amount in [*charged.items(), (1, "4.5"), (31, "99")]:
        hold = ledger_hold(
            actor=alice,
            project=tenant.project,
            cluster=cluster,
            amount=Decimal(amount),
            key=f"e2e-chart-{days_ago}-{amount}",
        )
        ledger_settle(actor=alice, hold=hold, actual=Decimal(amount))
        LedgerEntry.objects.filter(hold=hold, kind=LedgerEntry.Kind.CHARGE).update(
            created_at=now - timedelta(days=days_ago)
        )
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    for name, gpus in [("fold-large", 4), ("fold-small", 1)]:
        factories.submitted_job(
            user=alice,
            project=tenant.project,
            cluster=cluster,
            name=name,
            script="python fold.py\n",
            gpus=gpus,
            gpu_type="h100",
            cpus=8,
            memory_mb=65536,
            time_limit_minutes=120,
        )
    allocation.refresh_from_db()
    page = browser()

    sign_in(page, verified(alice).username)

    bars = page.evaluate("Chart.getChart('usage-chart').data.datasets[0].data")
    labels = page.evaluate("Chart.getChart('usage-chart').data.labels")
    expected = [0.0] * 30
    for days_ago, amount in charged.items():
        expected[29 - days_ago] += float(amount)
    expected[28] += 4.5  # two charges yesterday make one bar
    assert labels[-1] == now.date().isoformat()
    assert labels[0] == (now - timedelta(days=29)).date().isoformat()
    assert bars == expected  # the charge 31 days ago is outside the chart
    total = sum(Decimal(a) for a in charged.values()) + Decimal("4.5")
    expect(page.locator("main")).to_contain_text(f"last 30 days: {total:,.2f} SU")
    row = page.locator("main table").first.locator("tbody tr", has_text="Protein folding")
    assert row.locator("td").all_inner_texts()[3:] == [
        f"{allocation.credited:,.2f}",
        f"{allocation.held:,.2f}",
        f"{allocation.charged:,.2f}",
        f"{allocation.available:,.2f}",
    ]
    assert allocation.held > 0 and allocation.charged == total + Decimal(99)
    recent = page.locator("main section", has_text="Recent jobs")
    expect(recent.locator("tbody tr")).to_have_count(2)
    page.reload()  # without the "signed in" message
    screenshot(page, "dashboard-month")


def test_under_the_content_security_policy_api_docs_admin_2fa_tokens_and_cancel_still_work(
    browser: Browser,
    alice: User,
    tenant: Any,
    allocation: Allocation,
    cluster: Cluster,
    purge_broker: None,
) -> None:
    """Pages whose behaviour moved out of inline code (or that come from libraries) under the
    policy: the browser fixture fails the test on any CSP violation they log."""
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    job = factories.submitted_job(
        user=alice, project=tenant.project, cluster=cluster, name="to-cancel"
    )
    page = browser()
    sign_in(page, verified(alice).username)

    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("GPU Commons API")
    expect(page.locator(".opblock").first).to_be_visible()

    page.goto("/django-admin/")
    expect(page.locator("#site-name")).to_be_visible()
    page.goto("/manage/usage/")
    expect(page.locator("h1")).to_be_visible()

    page.goto("/accounts/2fa/totp/activate/")
    if "/reauthenticate/" in page.url:
        page.locator("input[name=password]").fill(PASSWORD)
        page.locator("form button[type=submit]").first.click()
        page.wait_for_url("**/2fa/totp/activate/")
    expect(page.locator("img[src^='data:image/svg+xml']")).to_be_visible()  # the QR code

    page.goto("/settings/tokens/")
    page.locator("input[name=name]").fill("laptop")
    page.locator("form button[type=submit]", has_text="Create token").click()
    token_box = page.get_by_label("New API token")
    token_box.click()
    selected = page.evaluate(
        "(() => { const i = document.querySelector('[data-select-on-click]');"
        " return i.value.substring(i.selectionStart, i.selectionEnd); })()"
    )
    assert selected == token_box.input_value()
    assert selected.startswith("gpuc_")

    page.goto(f"/jobs/{job.uuid}/")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_timeout(300)
    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status .badge").first).to_have_text("Cancelled")
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED


def test_an_invitee_opens_the_emailed_link_and_accepts_with_the_code_never_sent_in_a_url(
    browser: Browser, live_server: Any, alice: User, tenant: Any
) -> None:
    from accounts.services import invitation_create

    invitation_create(actor=alice, organization=tenant.org, email="carol@uni.example")
    # the invitation email goes out on commit, which this transactional test makes
    link = re.search(r"(http\S+/invitations/#\S+)", mail.outbox[-1].body)
    assert link is not None
    path = link.group(1).split("/invitations/", 1)[1]
    carol = verified(factories.UserFactory(username="carol", email="carol@uni.example"))
    page = browser()
    sign_in(page, carol.username)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{live_server.url}/invitations/{path}")
    page.wait_for_url("**/invitations/pending/")
    expect(page.locator("article")).to_contain_text("carol@uni.example")
    page.get_by_role("button", name="Accept invitation").click()
    page.wait_for_url(f"**/organizations/{tenant.org.uuid}/")

    code = path.lstrip("#")
    assert all(code not in url for url in requested)  # the fragment never leaves the browser
    assert tenant.org.memberships.filter(user=carol).exists()
