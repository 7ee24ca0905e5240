"""The self-serve trial: a company organization's owner (verified email) starts it once, on the
web or the API; everything else is refused with a message naming the problem and nothing
written."""

from __future__ import annotations

import threading
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection, connections

from accounts.models import Membership, Organization, Project
from quotas.exceptions import EmailNotVerified, TrialAlreadyUsed, TrialUnavailable
from quotas.models import Allocation, LedgerEntry, Trial
from quotas.services.trials import trial_start
from tests import factories
from tests.conftest import verify_email
from tests.quotas.conftest import assert_reconciles

pytestmark = pytest.mark.django_db


@pytest.fixture
def startup(alice, bob):
    """Alice owns a company with no project yet (bob is a plain member); email verified."""
    org = factories.OrganizationFactory(
        name="Tensor Startup", slug="tensor", kind=Organization.Kind.COMPANY
    )
    Membership.objects.create(organization=org, user=alice, role=Membership.Role.OWNER)
    Membership.objects.create(organization=org, user=bob, role=Membership.Role.MEMBER)
    verify_email(alice)
    verify_email(bob)
    return org


@pytest.fixture(autouse=True)
def _trial_settings(settings):
    settings.GPUC_TRIAL_SU = 50
    settings.GPUC_TRIAL_DAYS = 7
    settings.GPUC_TRIAL_CLUSTERS = []


def _nothing_written(org: Organization) -> None:
    assert not Trial.objects.filter(organization=org).exists()
    assert not Allocation.objects.filter(project__organization=org).exists()


def test_alice_starts_the_trial_and_gets_a_trial_allocation_on_a_new_project(
    alice, startup, cluster
):
    allocation = trial_start(actor=alice, organization=startup)

    allocation.refresh_from_db()
    assert allocation.kind == Allocation.Kind.TRIAL
    assert allocation.credited == Decimal("50")
    assert allocation.available == Decimal("50")
    assert list(allocation.clusters.all()) == [cluster]
    assert (allocation.ends_at - allocation.starts_at).days == 7
    assert allocation.project.name == "Trial"
    assert allocation.project.organization == startup
    assert Trial.objects.get(organization=startup).allocation == allocation
    entry = LedgerEntry.objects.get(allocation=allocation)
    assert (entry.kind, entry.amount, entry.actor) == ("credit", Decimal("50"), alice)
    assert_reconciles()


def test_the_trial_goes_to_the_organizations_only_project(alice, startup, cluster):
    project = factories.ProjectFactory(organization=startup, name="Vision", slug="vision")

    allocation = trial_start(actor=alice, organization=startup)

    assert allocation.project == project
    assert Project.objects.filter(organization=startup).count() == 1


def test_a_second_trial_is_refused_naming_the_problem_and_nothing_is_added(alice, startup, cluster):
    first = trial_start(actor=alice, organization=startup)

    with pytest.raises(TrialAlreadyUsed, match="Tensor Startup already had its trial"):
        trial_start(actor=alice, organization=startup)

    assert Allocation.objects.filter(project__organization=startup).get() == first
    assert LedgerEntry.objects.filter(allocation__project__organization=startup).count() == 1


def test_an_academic_organization_is_told_to_request_a_grant(alice, tenant, cluster):
    verify_email(alice)

    with pytest.raises(TrialUnavailable, match="request a grant instead"):
        trial_start(actor=alice, organization=tenant.org)

    _nothing_written(tenant.org)


def test_an_unverified_email_is_refused_and_no_project_is_half_created(alice, startup, cluster):
    alice.emailaddress_set.update(verified=False)

    with pytest.raises(EmailNotVerified):
        trial_start(actor=alice, organization=startup)

    _nothing_written(startup)
    assert not Project.objects.filter(organization=startup).exists()


def test_a_plain_member_may_not_start_the_trial(bob, startup, cluster):
    with pytest.raises(Exception, match="Only an owner or admin"):
        trial_start(actor=bob, organization=startup)

    _nothing_written(startup)


def test_trials_switched_off_by_the_facility_are_refused(alice, startup, cluster, settings):
    settings.GPUC_TRIAL_SU = 0

    with pytest.raises(TrialUnavailable, match="no self-serve trials"):
        trial_start(actor=alice, organization=startup)

    _nothing_written(startup)


def test_the_trial_is_limited_to_the_clusters_the_facility_names(alice, startup, cluster, settings):
    other = factories.ClusterFactory(name="other", kind="simulated")
    settings.GPUC_TRIAL_CLUSTERS = ["other"]

    allocation = trial_start(actor=alice, organization=startup)

    assert list(allocation.clusters.all()) == [other]


# --- web --------------------------------------------------------------------------------------


def test_alice_starts_the_trial_from_its_page(alice, startup, cluster, web):
    client = web(alice)
    page = client.get(f"/organizations/{startup.uuid}/trial/")
    assert page.status_code == HTTPStatus.OK
    assert "Start the trial" in page.content.decode()

    response = client.post(f"/organizations/{startup.uuid}/trial/")

    assert response.status_code == HTTPStatus.FOUND
    allocation = Trial.objects.get(organization=startup).allocation
    assert response["Location"] == f"/allocations/{allocation.uuid}/"
    again = client.post(f"/organizations/{startup.uuid}/trial/")
    assert again.status_code == HTTPStatus.CONFLICT
    assert "already had its trial" in again.content.decode()
    assert Allocation.objects.filter(project__organization=startup).count() == 1


def test_the_trial_page_of_a_company_alice_is_not_in_is_a_404_for_mallory(
    startup, mallory, web, cluster
):
    client = web(mallory)

    assert client.get(f"/organizations/{startup.uuid}/trial/").status_code == HTTPStatus.NOT_FOUND
    assert client.post(f"/organizations/{startup.uuid}/trial/").status_code == HTTPStatus.NOT_FOUND
    _nothing_written(startup)


# --- API --------------------------------------------------------------------------------------


def test_the_api_starts_the_trial_once_then_answers_409(api_alice, startup, cluster):
    url = f"/api/v1/organizations/{startup.uuid}/trial/"

    created = api_alice.post(url, {}, format="json")
    again = api_alice.post(url, {}, format="json")

    assert created.status_code == HTTPStatus.CREATED
    body = created.json()
    assert (body["kind"], body["credited"], body["available"]) == ("trial", "50.0000", "50.0000")
    assert again.status_code == HTTPStatus.CONFLICT
    assert again.json()["code"] == "trial_already_used"
    assert Allocation.objects.filter(project__organization=startup).count() == 1


def test_the_api_answers_mallory_404_and_an_academic_org_400(
    api_alice, api_mallory, startup, tenant, cluster
):
    outsider = api_mallory.post(f"/api/v1/organizations/{startup.uuid}/trial/", {}, format="json")
    academic = api_alice.post(f"/api/v1/organizations/{tenant.org.uuid}/trial/", {}, format="json")

    assert outsider.status_code == HTTPStatus.NOT_FOUND
    assert academic.status_code == HTTPStatus.BAD_REQUEST
    assert academic.json()["code"] == "trial_unavailable"
    _nothing_written(startup)


def test_the_trial_endpoint_is_in_the_openapi_schema(api_alice):
    schema = api_alice.get("/api/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/organizations/{uuid}/trial/"]["post"]
    assert operation["operationId"] == "v1_organizations_trial_create"
    assert {"201", "400", "403", "404", "409"} <= set(operation["responses"])


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_starts_make_exactly_one_trial(alice, startup, cluster):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    start = threading.Barrier(10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        start.wait()
        try:
            trial_start(actor=alice, organization=startup)
            outcome = "started"
        except TrialAlreadyUsed:
            outcome = "refused"
        except Exception as exc:
            outcome = f"error: {exc!r}"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(outcomes) == ["refused"] * 9 + ["started"]
    assert Trial.objects.filter(organization=startup).count() == 1
    assert Allocation.objects.filter(project__organization=startup).count() == 1
    assert Project.objects.filter(organization=startup).count() == 1
