"""Every page at a phone's 390 px and at a desktop's 1280 px: no page scrolls sideways, and on
the phone the navigation folds behind a Menu button (CSS only) that opens it."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from playwright.sync_api import Page, expect

from accounts.models import User
from jobs.models import ClusterAccount
from quotas.models import Allocation, AllocationRequest, Cluster
from quotas.policy import REVIEWERS_GROUP
from tests import factories
from tests.e2e.conftest import Browser, screenshot, sign_in, verified

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
NAV_LINKS = "header nav a[href^='/']"


def _nav_pages(page: Page) -> list[str]:
    """Every same-site page the header links to (the menu and the account dropdown)."""
    hrefs = page.locator(NAV_LINKS).evaluate_all("links => links.map(a => a.getAttribute('href'))")
    return list(dict.fromkeys(h.split("#")[0] for h in hrefs if h))


def _page_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def _widths(page: Page, urls: list[str], width: int) -> dict[str, tuple[int, int]]:
    """Visit each url at `width` px: {url: (status, the document's scroll width)}."""
    page.set_viewport_size(PHONE if width == PHONE["width"] else DESKTOP)
    seen = {}
    for url in urls:
        response = page.goto(url)
        page.wait_for_load_state("load")
        seen[url] = (response.status if response else 0, _page_width(page))
    return seen


def _fits(seen: dict[str, tuple[int, int]], width: int) -> dict[str, tuple[int, int]]:
    """The pages that failed to load or scroll sideways (empty when all is well)."""
    return {url: got for url, got in seen.items() if got[0] != HTTPStatus.OK or got[1] > width}


@pytest.fixture
def tenant_with_everything(
    alice: User, tenant: Any, allocation: Allocation, cluster: Cluster, purge_broker: None
) -> dict[str, str]:
    """Alice's project with a job, a grant request and a cluster account: the detail pages."""
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    job = factories.submitted_job(
        user=alice,
        project=tenant.project,
        cluster=cluster,
        name="a-job-with-a-rather-long-name-that-should-wrap-on-a-phone-screen",
    )
    request = AllocationRequest.objects.create(
        project=tenant.project,
        title="More GPU time for the folding runs",
        amount=Decimal("25000"),
        start_date=date(2026, 1, 1),
        end_date=date(2026, 12, 31),
        justification="Protein folding at scale.",
        requested_by=alice,
        state=AllocationRequest.State.SUBMITTED,
    )
    request.clusters.add(cluster)
    return {
        "project": reverse("accounts:project_detail", args=[tenant.project.uuid]),
        "organization": reverse("accounts:organization_detail", args=[tenant.org.uuid]),
        "job": reverse("job-detail", args=[job.uuid]),
        "allocation": reverse("quotas:allocation_detail", args=[allocation.uuid]),
        "request": reverse("quotas:allocation_request_detail", args=[request.uuid]),
        "new request": reverse("quotas:allocation_request_create"),
        "clusters": reverse("quotas:cluster_list"),
        "new project": reverse("accounts:project_create"),
    }


def test_at_390_px_the_menu_folds_behind_a_button_that_opens_it(
    browser: Browser, alice: User, tenant: Any
) -> None:
    page = browser()
    sign_in(page, verified(alice).username)
    page.set_viewport_size(PHONE)
    page.goto("/")
    menu = page.locator("label.nav-toggle-button")
    jobs = page.locator(".nav-links").get_by_role("link", name="Jobs")

    expect(menu).to_be_visible()
    expect(jobs).to_be_hidden()
    screenshot(page, "phone-menu-folded")
    menu.click()
    expect(jobs).to_be_visible()
    screenshot(page, "phone-menu-open")
    assert _page_width(page) <= PHONE["width"]
    jobs.click()
    page.wait_for_url("**/jobs/")
    expect(page.locator("h1")).to_have_text("Jobs")
    expect(jobs).to_be_hidden()  # a new page starts with the menu folded again

    page.set_viewport_size(DESKTOP)
    expect(menu).to_be_hidden()
    expect(jobs).to_be_visible()


def test_every_page_of_a_member_fits_390_px_and_1280_px_without_sideways_scroll(
    browser: Browser, alice: User, tenant_with_everything: dict[str, str]
) -> None:
    page = browser()
    sign_in(page, verified(alice).username)
    urls = [*_nav_pages(page), *tenant_with_everything.values()]
    assert {"/", "/jobs/", "/projects/"} <= set(urls)  # the menu was found

    assert _fits(_widths(page, urls, PHONE["width"]), PHONE["width"]) == {}
    page.goto(tenant_with_everything["project"])
    screenshot(page, "phone-project")
    assert _fits(_widths(page, urls, DESKTOP["width"]), DESKTOP["width"]) == {}
    page.goto(tenant_with_everything["project"])
    screenshot(page, "desktop-project")


def test_every_page_of_a_newcomer_with_nothing_fits_390_px(browser: Browser, db: Any) -> None:
    carol = verified(factories.UserFactory(username="carol", email="carol@uni.example"))
    anonymous = browser()
    anonymous.set_viewport_size(PHONE)
    public = ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"]
    assert _fits(_widths(anonymous, public, PHONE["width"]), PHONE["width"]) == {}

    page = browser()
    sign_in(page, carol.username)
    urls = _nav_pages(page)

    assert _fits(_widths(page, urls, PHONE["width"]), PHONE["width"]) == {}


def test_every_staff_page_in_the_menu_fits_390_px(
    browser: Browser, tenant_with_everything: dict[str, str]
) -> None:
    dave = verified(
        factories.UserFactory(username="dave", email="dave@facility.example", is_staff=True)
    )
    dave.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    page = browser()
    sign_in(page, dave.username)
    menu = _nav_pages(page)
    assert "/manage/" in menu and "/review/" in menu
    page.goto("/manage/")
    staff_pages = page.locator("main a[href^='/manage/']").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    urls = list(dict.fromkeys([*menu, *staff_pages]))

    assert _fits(_widths(page, urls, PHONE["width"]), PHONE["width"]) == {}
    assert _fits(_widths(page, urls, DESKTOP["width"]), DESKTOP["width"]) == {}


# A path segment with no place to break: an error page that echoes it must still fit.
UNBROKEN = "a-requested-path-with-no-place-to-break-" * 12


@pytest.mark.urls("tests.urls_failing")
def test_the_error_pages_fit_390_px_however_long_what_they_echo(
    browser: Browser, alice: User, tenant: Any
) -> None:
    pages = {
        f"/{UNBROKEN}/": HTTPStatus.NOT_FOUND,
        f"/jobs/?{UNBROKEN}=%00": HTTPStatus.BAD_REQUEST,  # the 400 page names the parameter
        "/_test/forbidden/": HTTPStatus.FORBIDDEN,
        "/_test/boom/": HTTPStatus.INTERNAL_SERVER_ERROR,
    }
    # a view's own Http404 (an anonymous visitor is sent to sign in instead)
    members_pages = {**pages, f"/projects/{uuid.uuid4()}/": HTTPStatus.NOT_FOUND}
    anonymous = browser()
    member = browser()
    sign_in(member, verified(alice).username)

    for page, expected in ((anonymous, pages), (member, members_pages)):
        seen = _widths(page, list(expected), PHONE["width"])
        assert {url: status for url, (status, _) in seen.items()} == expected
        assert {url: px for url, (_, px) in seen.items() if px > PHONE["width"]} == {}
    member.goto(f"/{UNBROKEN}/")
    expect(member.locator("h1")).to_have_text("Page not found")
    screenshot(member, "phone-404")
