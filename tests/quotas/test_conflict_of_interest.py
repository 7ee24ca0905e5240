"""Reviewers never decide requests of their own organizations or projects: the API answers 403
`conflict_of_interest`, the web shows a refusal, and neither queue nor email offers them."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from rest_framework.test import APIClient

from accounts.models import Membership, ProjectMember
from quotas.exceptions import ConflictOfInterest
from quotas.models import Allocation, AllocationRequestEvent, LedgerEntry
from quotas.policy import REVIEWERS_GROUP
from quotas.services import (
    allocation_request_approve,
    allocation_request_reject,
    allocation_request_submit,
)
from tests import factories
from tests.quotas.conftest import draft_request

BASE = "/api/v1/allocation-requests/"
DECISIONS = [
    ("approve", {}),
    ("reject", {"comment": "Not fundable."}),
    ("request-changes", {"comment": "Cut the amount."}),
]
WEB_DECISIONS = [
    ("approve", {}),
    ("reject", {"comment": "Not fundable."}),
    ("request_changes", {"comment": "Cut the amount."}),
]


def _join(user, tenant, how):
    """Make `user` belong to the tenant: an organization role, or project membership only."""
    if how == "project member":
        ProjectMember.objects.create(
            project=tenant.project, user=user, role=ProjectMember.Role.MEMBER
        )
    else:
        Membership.objects.create(organization=tenant.org, user=user, role=how)


MEMBERSHIPS = [
    Membership.Role.OWNER,
    Membership.Role.ADMIN,
    Membership.Role.MEMBER,
    Membership.Role.BILLING,
    "project member",
]


def _submitted(tenant, cluster, alice):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)
    return request


def _assert_untouched(request):
    request.refresh_from_db()
    assert (request.state, request.allocation) == ("submitted", None)
    assert not Allocation.objects.exists()
    assert not LedgerEntry.objects.exists()
    assert list(request.events.values_list("to_state", flat=True)) == ["draft", "submitted"]


@pytest.mark.parametrize("how", MEMBERSHIPS)
@pytest.mark.parametrize(("action", "body"), DECISIONS)
def test_a_reviewer_who_belongs_to_the_tenant_gets_403_conflict_of_interest_by_api(
    api_carol, carol, alice, tenant, cluster, how, action, body
):
    _join(carol, tenant, how)
    request = _submitted(tenant, cluster, alice)

    response = api_carol.post(f"{BASE}{request.uuid}/{action}/", body, format="json")

    assert response.status_code == HTTPStatus.FORBIDDEN, response.json()
    assert response.json()["code"] == "conflict_of_interest"
    assert "Vision Lab" in response.json()["detail"]
    _assert_untouched(request)


def test_a_superuser_who_is_an_org_admin_is_not_exempt(alice, tenant, cluster):
    root = factories.UserFactory(username="root", is_superuser=True, is_staff=True)
    _join(root, tenant, Membership.Role.ADMIN)
    request = _submitted(tenant, cluster, alice)
    client = APIClient()
    client.force_authenticate(root)

    response = client.post(f"{BASE}{request.uuid}/approve/", {"amount": "50000"}, format="json")

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["code"] == "conflict_of_interest"
    _assert_untouched(request)
    assert client.get(f"{BASE}?queue=1").json()["results"] == []


def test_an_unrelated_reviewer_can_approve_by_api(api_carol, carol, alice, tenant, cluster):
    request = _submitted(tenant, cluster, alice)

    response = api_carol.post(f"{BASE}{request.uuid}/approve/", {}, format="json")

    assert response.status_code == HTTPStatus.OK, response.json()
    request.refresh_from_db()
    assert request.state == "approved"
    assert request.allocation is not None
    assert LedgerEntry.objects.filter(allocation=request.allocation).count() == 1


def test_the_api_queue_leaves_out_the_reviewers_own_tenants_requests(
    api_carol, carol, alice, mallory, tenant, mallory_tenant, cluster
):
    own = _submitted(tenant, cluster, alice)
    other = _submitted(mallory_tenant, cluster, mallory)
    _join(carol, tenant, Membership.Role.MEMBER)

    queue = api_carol.get(f"{BASE}?queue=1")

    assert queue.status_code == HTTPStatus.OK
    assert [r["id"] for r in queue.json()["results"]] == [str(other.uuid)]
    # Still visible to her as a request, just not offered for review.
    assert api_carol.get(f"{BASE}{own.uuid}/").status_code == HTTPStatus.OK


def test_the_queue_of_decided_requests_also_leaves_them_out(
    api_carol, carol, alice, tenant, cluster
):
    request = _submitted(tenant, cluster, alice)
    reviewer = factories.UserFactory(username="erin")
    reviewer.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    allocation_request_reject(actor=reviewer, request=request, comment="No.")
    _join(carol, tenant, "project member")

    queue = api_carol.get(f"{BASE}?queue=1&state=rejected")

    assert queue.status_code == HTTPStatus.OK
    assert queue.json()["results"] == []


def test_the_submission_email_is_not_sent_to_conflicted_reviewers(
    carol, alice, tenant, cluster, django_capture_on_commit_callbacks
):
    _join(carol, tenant, Membership.Role.ADMIN)
    erin = factories.UserFactory(username="erin", email="erin@facility.example")
    erin.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    request = draft_request(tenant.project, cluster, alice)

    with django_capture_on_commit_callbacks(execute=True):
        allocation_request_submit(actor=alice, request=request)

    to_review = [m for m in mail.outbox if "To review" in m.subject]
    assert [m.to for m in to_review] == [["erin@facility.example"]]


# --- web ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", MEMBERSHIPS)
@pytest.mark.parametrize(("action", "body"), WEB_DECISIONS)
def test_a_reviewer_who_belongs_to_the_tenant_is_refused_with_403_on_the_web(
    web, carol, alice, tenant, cluster, how, action, body
):
    _join(carol, tenant, how)
    request = _submitted(tenant, cluster, alice)

    response = web(carol).post(
        f"/allocation-requests/{request.uuid}/review/", {"action": action, **body}
    )

    assert response.status_code == HTTPStatus.FORBIDDEN
    page = response.content.decode()
    assert "conflict_of_interest" in page
    assert "Conflict of interest" in page
    assert f"/allocation-requests/{request.uuid}/" in page
    _assert_untouched(request)


def test_the_request_page_explains_the_conflict_and_offers_no_review_form(
    web, carol, alice, tenant, cluster
):
    _join(carol, tenant, Membership.Role.OWNER)
    request = _submitted(tenant, cluster, alice)

    response = web(carol).get(f"/allocation-requests/{request.uuid}/")

    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert 'id="conflict-of-interest"' in page
    assert 'value="approve"' not in page


def test_the_web_queue_leaves_out_the_reviewers_own_tenants_requests(
    web, carol, alice, mallory, tenant, mallory_tenant, cluster
):
    own = draft_request(tenant.project, cluster, alice, title="Own lab request")
    allocation_request_submit(actor=alice, request=own)
    other = draft_request(mallory_tenant.project, cluster, mallory, title="Other lab request")
    allocation_request_submit(actor=mallory, request=other)
    _join(carol, tenant, "project member")

    page = web(carol).get("/review/").content.decode()

    assert "Other lab request" in page
    assert "Own lab request" not in page


def test_an_unrelated_reviewer_can_approve_on_the_web(web, carol, alice, tenant, cluster):
    request = _submitted(tenant, cluster, alice)
    assert "Protein folding at scale" in web(carol).get("/review/").content.decode()

    response = web(carol).post(
        f"/allocation-requests/{request.uuid}/review/",
        {
            "action": "approve",
            "amount": "5000",
            "start_date": str(request.start_date),
            "end_date": str(request.end_date),
        },
    )

    assert response.status_code == HTTPStatus.FOUND
    request.refresh_from_db()
    assert request.state == "approved"
    assert LedgerEntry.objects.filter(allocation=request.allocation).count() == 1
    assert AllocationRequestEvent.objects.filter(request=request, actor=carol).exists()


def test_the_service_itself_refuses_so_every_caller_gets_the_rule(carol, alice, tenant, cluster):
    _join(carol, tenant, Membership.Role.BILLING)
    request = _submitted(tenant, cluster, alice)

    with pytest.raises(ConflictOfInterest):
        allocation_request_approve(actor=carol, request=request)

    _assert_untouched(request)
