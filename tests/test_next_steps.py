"""No dead ends: every page of the navigation renders for a user with nothing (no organization,
no project, no allocation) with a 200 and a next-step button, and the step follows what the
user lacks."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from django.test import Client

from accounts.models import Membership, Organization, ProjectMember
from jobs.models import ClusterAccount
from tests import factories
from tests.conftest import verify_email

pytestmark = pytest.mark.django_db

# The navigation of a signed-in user with nothing (checked against the rendered nav below).
NAV_PAGES = [
    "/",
    "/jobs/",
    "/interactive/",
    "/jobs/new/",
    "/access/",
    "/allocations/",
    "/allocation-requests/",
    "/projects/",
    "/organizations/",
    "/settings/tokens/",
]
NEXT_STEP = re.compile(r'<a href="([^"]+)" role="button" class="next-step"')


@pytest.fixture
def newcomer():
    return factories.UserFactory(username="newcomer", email="newcomer@example.org")


def _client(user) -> Client:
    user.save(update_fields=["password"])
    client = Client()
    client.force_login(user)
    return client


def _nav_links(page: str) -> list[str]:
    nav = page.split('<ul class="nav-links" id="nav-links">', 1)[1].split("</ul>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


def _next_steps(client: Client, url: str = "/") -> list[str]:
    response = client.get(url)
    assert response.status_code == HTTPStatus.OK
    return NEXT_STEP.findall(response.content.decode())


def test_the_pages_tested_below_are_exactly_the_navigation_of_a_user_with_nothing(newcomer):
    page = _client(newcomer).get("/").content.decode()

    assert _nav_links(page) == NAV_PAGES


@pytest.mark.parametrize("url", NAV_PAGES)
def test_every_navigation_page_renders_for_a_user_with_nothing_with_a_next_step(newcomer, url):
    response = _client(newcomer).get(url)

    assert response.status_code == HTTPStatus.OK
    steps = NEXT_STEP.findall(response.content.decode())
    assert "/organizations/new/" in steps


def test_the_billing_link_shared_with_a_user_with_nothing_renders_a_next_step(newcomer):
    assert "/organizations/new/" in _next_steps(_client(newcomer), "/billing/")


def test_every_next_step_of_a_user_with_nothing_leads_to_a_page_that_renders(newcomer):
    client = _client(newcomer)

    for url in _next_steps(client):
        assert client.get(url).status_code == HTTPStatus.OK, url


def test_an_organization_owner_without_a_project_is_offered_to_create_one(alice, tenant):
    ProjectMember.objects.filter(user=alice).delete()
    tenant.project.delete()

    assert _next_steps(_client(alice)) == ["/projects/new/"]


def test_a_plain_member_without_a_project_is_sent_to_the_organization_page(bob, tenant):
    ProjectMember.objects.filter(user=bob).delete()

    assert _next_steps(_client(bob)) == [f"/organizations/{tenant.org.uuid}/"]


def test_a_company_owner_without_sus_may_request_a_grant_or_start_a_trial(alice, tenant, cluster):
    Organization.objects.filter(pk=tenant.org.pk).update(kind=Organization.Kind.COMPANY)
    verify_email(alice)

    steps = _next_steps(_client(alice))

    assert steps == ["/allocation-requests/new/", f"/organizations/{tenant.org.uuid}/trial/"]


def test_an_academic_member_without_sus_is_offered_a_grant_request(bob, tenant):
    assert _next_steps(_client(bob)) == ["/allocation-requests/new/"]


def test_a_funded_user_without_a_cluster_account_is_sent_to_request_access(bob, allocation):
    assert _next_steps(_client(bob)) == ["/access/"]


def test_a_user_who_is_set_up_sees_no_next_step_panel(bob, allocation, cluster):
    ClusterAccount.objects.create(user=bob, cluster=cluster, username="bob", uid=5000)

    response = _client(bob).get("/")

    assert response.status_code == HTTPStatus.OK
    assert 'id="next-steps"' not in response.content.decode()


def test_the_submit_form_opens_on_the_project_that_can_pay_with_its_balance_and_limits(
    bob, tenant, allocation, cluster
):
    empty = factories.ProjectFactory(organization=tenant.org, name="Aardvark", slug="aardvark")
    ProjectMember.objects.create(project=empty, user=bob)
    Membership.objects.filter(user=bob).update(role=Membership.Role.MEMBER)

    page = _client(bob).get("/jobs/new/").content.decode()

    selected = re.search(r'<option value="([^"]+)" selected>', page)
    assert selected is not None
    assert selected.group(1) == str(tenant.project.uuid)
    assert 'Protein folding</td><td class="num"><strong>1,000.00</strong> SU' in page
    assert 'Aardvark</td><td class="num"><strong>0.00</strong> SU' in page
    assert "GPUs ≤ 64" in page
    assert "time (minutes) ≤ 20160" in page


def test_the_estimate_says_in_words_why_it_cannot_estimate(bob, allocation, cluster):
    response = _client(bob).post(
        "/jobs/estimate/",
        {
            "project": str(allocation.project.uuid),
            "cluster": cluster.name,
            "name": "job",
            "gpus": "two",
            "cpus": "1",
            "memory_mb": "1024",
            "time_limit_minutes": "60",
        },
    )

    assert response.status_code == HTTPStatus.OK
    assert "Cannot estimate: Gpus — Enter a whole number." in response.content.decode()


def test_the_estimate_of_a_user_without_a_project_says_to_get_one(newcomer):
    response = _client(newcomer).post("/jobs/estimate/", {"name": "job"})

    assert "Cannot estimate: you have no project yet" in response.content.decode()
