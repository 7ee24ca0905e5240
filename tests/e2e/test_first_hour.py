"""The first hour without help, in a real browser: an invitee who has no account signs up from
the emailed link and lands in the organization; a startup's owner finds the trial from the
dashboard's next step and gets SU to spend."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from playwright.sync_api import expect

from accounts.models import Membership, Organization, User
from quotas.models import Allocation, Cluster
from tests import factories
from tests.e2e.conftest import Browser, screenshot, sign_in, verified

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "a long passphrase for carol 42"


def test_a_signed_out_invitee_signs_up_from_the_link_and_joins_without_a_second_mail(
    browser: Browser, live_server: Any, alice: User, tenant: Any
) -> None:
    from accounts.services import invitation_create

    invitation_create(actor=alice, organization=tenant.org, email="carol@uni.example")
    link = re.search(r"(http\S+/invitations/#\S+)", mail.outbox[-1].body)
    assert link is not None
    assert link.group(1).startswith(live_server.url)
    sent = len(mail.outbox)
    page = browser()

    page.goto(link.group(1))
    page.wait_for_url("**/accounts/login/?next=/invitations/pending/")
    page.locator("main").get_by_role("link", name=re.compile("sign up", re.I)).click()
    page.locator("input[name=email]").fill("carol@uni.example")
    page.locator("input[name=username]").fill("carol")
    page.locator("input[name=password1]").fill(NEW_PASSWORD)
    page.locator("input[name=password2]").fill(NEW_PASSWORD)
    page.locator("main form button[type=submit]").click()

    page.wait_for_url(f"**/organizations/{tenant.org.uuid}/")
    expect(page.locator("main")).to_contain_text("Welcome to Vision Lab.")
    screenshot(page, "invitee-joined")
    assert Membership.objects.filter(organization=tenant.org, user__username="carol").exists()
    assert len(mail.outbox) == sent


def test_a_startup_owner_starts_the_trial_from_the_dashboards_next_step(
    browser: Browser, live_server: Any, alice: User, settings: Any
) -> None:
    settings.GPUC_TRIAL_SU = 50
    settings.GPUC_TRIAL_DAYS = 14
    org = factories.OrganizationFactory(
        name="Tensor Startup", slug="tensor", kind=Organization.Kind.COMPANY
    )
    Membership.objects.create(organization=org, user=alice, role=Membership.Role.OWNER)
    factories.ProjectFactory(organization=org, name="Vision", slug="vision")
    factories.ClusterFactory(name="sim", kind=Cluster.Kind.SIMULATED)
    verified(alice)
    page = browser()
    sign_in(page, alice.username)

    expect(page.locator("#next-steps")).to_contain_text("no SU to spend")
    page.get_by_role("button", name="Start a free trial for Tensor Startup").click()
    page.get_by_role("button", name="Start the trial").click()

    page.wait_for_url("**/allocations/*/")
    expect(page.locator("main")).to_contain_text("Trial started: 50 SU for Vision")
    screenshot(page, "trial-started")
    allocation = Allocation.objects.get(project__organization=org)
    assert (allocation.kind, allocation.credited) == ("trial", 50)
    page.goto("/")
    expect(page.locator("#next-steps")).to_contain_text("Request cluster access")
