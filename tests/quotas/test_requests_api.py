from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from quotas.models import Allocation, AllocationRequest, LedgerEntry
from quotas.services import allocation_request_submit
from tests import factories
from tests.quotas.conftest import draft_request, request_body

BASE = "/api/v1/allocation-requests/"


def test_the_full_flow_request_changes_resubmit_approve_by_api(
    api_alice, api_carol, alice, carol, tenant, cluster, django_capture_on_commit_callbacks
):
    created = api_alice.post(BASE, request_body(tenant.project, cluster), format="json")
    assert created.status_code == HTTPStatus.CREATED, created.json()
    rid = created.json()["id"]
    assert created.json()["state"] == "draft"

    with django_capture_on_commit_callbacks(execute=True):
        submitted = api_alice.post(f"{BASE}{rid}/submit/")
    assert submitted.status_code == HTTPStatus.OK
    assert submitted.json()["state"] == "submitted"
    assert sorted(m.to[0] for m in mail.outbox) == [alice.email, carol.email]

    queue = api_carol.get(f"{BASE}?queue=1")
    assert [r["id"] for r in queue.json()["results"]] == [rid]

    with django_capture_on_commit_callbacks(execute=True):
        changes = api_carol.post(
            f"{BASE}{rid}/request-changes/", {"comment": "Justify the H100 hours."}, format="json"
        )
    assert changes.status_code == HTTPStatus.OK
    assert changes.json()["state"] == "changes_requested"
    assert mail.outbox[-1].to == [alice.email]
    assert "Justify the H100 hours." in mail.outbox[-1].body

    edited = api_alice.patch(
        f"{BASE}{rid}/", {"justification": "Benchmarks attached."}, format="json"
    )
    assert edited.status_code == HTTPStatus.OK
    assert edited.json()["justification"] == "Benchmarks attached."
    with django_capture_on_commit_callbacks(execute=True):
        resubmitted = api_alice.post(f"{BASE}{rid}/submit/")
    assert resubmitted.json()["state"] == "submitted"

    with django_capture_on_commit_callbacks(execute=True):
        approved = api_carol.post(
            f"{BASE}{rid}/approve/",
            {"amount": "4000", "comment": "Approved at 80 %."},
            format="json",
        )
    assert approved.status_code == HTTPStatus.OK, approved.json()
    body = approved.json()
    assert (body["state"], body["amount"]) == ("approved", "4000.0000")
    assert [(e["from_state"], e["to_state"]) for e in body["events"]] == [
        ("", "draft"),
        ("draft", "submitted"),
        ("submitted", "changes_requested"),
        ("changes_requested", "submitted"),
        ("submitted", "approved"),
    ]
    assert body["events"][-1]["changes"] == {"amount": ["5000.0000", "4000.0000"]}
    assert body["events"][-1]["actor"] == "carol"

    request = AllocationRequest.objects.get(uuid=rid)
    allocation = request.allocation
    assert (allocation.kind, allocation.status, allocation.credited) == (
        Allocation.Kind.GRANT,
        Allocation.Status.ACTIVE,
        Decimal(4000),
    )
    assert list(allocation.clusters.all()) == [cluster]
    credit = LedgerEntry.objects.get(allocation=allocation)
    assert (credit.kind, credit.actor) == (LedgerEntry.Kind.CREDIT, carol)

    to_alice = [m for m in mail.outbox if m.to == [alice.email]]
    assert [m.subject.split("' ")[-1] for m in to_alice] == [
        "submitted for review",
        "changes requested",
        "submitted for review",
        "approved",
    ]
    assert "amount: 5000.0000 -> 4000.0000" in to_alice[-1].body
    assert len([m for m in mail.outbox if m.to == [carol.email]]) == 2  # both submissions


def test_a_project_member_who_is_not_a_reviewer_cannot_approve(api_bob, alice, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)

    response = api_bob.post(f"{BASE}{request.uuid}/approve/", {}, format="json")

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["code"] == "not_reviewer"
    request.refresh_from_db()
    assert (request.state, request.allocation) == ("submitted", None)
    assert not LedgerEntry.objects.exists()


def test_the_requester_cannot_approve_their_own_request_even_as_a_reviewer(
    api_alice, alice, tenant, cluster
):
    from django.contrib.auth.models import Group

    alice.groups.add(Group.objects.get_or_create(name="allocation reviewers")[0])
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)

    response = api_alice.post(f"{BASE}{request.uuid}/approve/", {}, format="json")

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["code"] == "self_review"
    assert not Allocation.objects.exists()


def test_an_outsider_gets_404_on_every_request_endpoint(api_mallory, alice, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)
    url = f"{BASE}{request.uuid}/"

    assert api_mallory.get(url).status_code == HTTPStatus.NOT_FOUND
    assert api_mallory.patch(url, {"title": "x"}, format="json").status_code == 404
    for action, body in [
        ("submit", {}),
        ("approve", {}),
        ("reject", {"comment": "no"}),
        ("request-changes", {"comment": "no"}),
    ]:
        response = api_mallory.post(f"{url}{action}/", body, format="json")
        assert response.status_code == HTTPStatus.NOT_FOUND, action
    assert api_mallory.get(BASE).json()["results"] == []
    request.refresh_from_db()
    assert request.state == "submitted"


def test_a_reviewer_does_not_see_drafts(api_carol, alice, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)

    response = api_carol.post(f"{BASE}{request.uuid}/approve/", {}, format="json")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert api_carol.get(f"{BASE}?queue=1").json()["results"] == []


def test_approving_twice_is_a_conflict_naming_the_state(api_carol, alice, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)
    assert api_carol.post(f"{BASE}{request.uuid}/approve/", {}).status_code == HTTPStatus.OK

    again = api_carol.post(f"{BASE}{request.uuid}/approve/", {})

    assert again.status_code == HTTPStatus.CONFLICT
    assert (again.json()["code"], again.json()["state"]) == ("request_state", "approved")
    assert "approved" in again.json()["detail"]
    assert Allocation.objects.count() == 1
    assert LedgerEntry.objects.count() == 1


def test_approving_a_draft_is_a_conflict(api_carol, alice, tenant, cluster, carol):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)
    api_carol.post(f"{BASE}{request.uuid}/request-changes/", {"comment": "more"})

    response = api_carol.post(f"{BASE}{request.uuid}/approve/", {})

    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["state"] == "changes_requested"
    assert not Allocation.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": "-5"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"end_date": "2020-01-01"}, "end_date"),
        ({"clusters": []}, "clusters"),
        ({"clusters": ["no-such-cluster"]}, "clusters"),
        ({"title": ""}, "title"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_request_input_is_a_400_naming_the_field(api_alice, tenant, cluster, overrides, field):
    response = api_alice.post(
        BASE, request_body(tenant.project, cluster, **overrides), format="json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert re.split(r"[.[]", response.json()["field"])[0] == field
    assert not AllocationRequest.objects.exists()


def test_a_cluster_the_project_may_not_use_is_refused_naming_clusters(api_alice, tenant, cluster):
    private = factories.ClusterFactory(name="private", options={"allowed_organizations": ["evil"]})
    disabled = factories.ClusterFactory(name="retired", enabled=False)

    for bad in (private, disabled):
        response = api_alice.post(
            BASE, request_body(tenant.project, cluster, clusters=[bad.name]), format="json"
        )
        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert response.json()["field"] == "clusters"
        assert bad.name in response.json()["detail"]
    assert not AllocationRequest.objects.exists()


def test_a_cluster_disabled_after_submission_blocks_approval_and_the_ledger_is_unchanged(
    api_carol, alice, tenant, cluster
):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)
    cluster.enabled = False
    cluster.save()

    response = api_carol.post(f"{BASE}{request.uuid}/approve/", {})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "clusters"
    request.refresh_from_db()
    assert request.state == "submitted"
    assert not LedgerEntry.objects.exists()


def test_approval_with_bad_values_changes_nothing(api_carol, alice, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)
    url = f"{BASE}{request.uuid}/approve/"

    assert api_carol.post(url, {"amount": "-1"}).json()["field"] == "amount"
    end_before_start = {"end_date": str(request.start_date - timedelta(days=1))}
    response = api_carol.post(url, end_before_start, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "end_date"
    request.refresh_from_db()
    assert (request.state, request.amount) == ("submitted", Decimal(5000))
    assert not Allocation.objects.exists()


def test_reject_and_request_changes_need_a_comment(api_carol, alice, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)

    for action in ("reject", "request-changes"):
        response = api_carol.post(f"{BASE}{request.uuid}/{action}/", {}, format="json")
        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert response.json()["field"] == "comment"
    request.refresh_from_db()
    assert request.state == "submitted"


def test_a_rejected_request_emails_the_requester_and_is_final(
    api_carol, api_alice, alice, tenant, cluster, django_capture_on_commit_callbacks
):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_carol.post(
            f"{BASE}{request.uuid}/reject/", {"comment": "Out of scope."}, format="json"
        )

    assert response.json()["state"] == "rejected"
    assert mail.outbox[-1].to == [alice.email]
    assert "Out of scope." in mail.outbox[-1].body
    assert api_alice.post(f"{BASE}{request.uuid}/submit/").status_code == HTTPStatus.CONFLICT


def test_only_the_pi_or_a_manager_drafts_and_submits(api_bob, bob, alice, tenant, cluster):
    response = api_bob.post(BASE, request_body(tenant.project, cluster), format="json")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["code"] == "not_project_manager"

    request = draft_request(tenant.project, cluster, alice)
    response = api_bob.post(f"{BASE}{request.uuid}/submit/")
    assert response.status_code == HTTPStatus.FORBIDDEN
    request.refresh_from_db()
    assert request.state == "draft"


def test_an_outsiders_project_is_404(api_mallory, tenant, cluster):
    response = api_mallory.post(BASE, request_body(tenant.project, cluster), format="json")

    assert response.status_code == HTTPStatus.NOT_FOUND


def test_a_request_can_carry_a_document_by_multipart(api_alice, web, alice, tenant, cluster):
    body = request_body(tenant.project, cluster)
    body["document"] = SimpleUploadedFile("award.pdf", b"%PDF-1.4 award", "application/pdf")

    response = api_alice.post(BASE, body, format="multipart")

    assert response.status_code == HTTPStatus.CREATED, response.json()
    download = web(alice).get(response.json()["document"])
    assert download.status_code == HTTPStatus.OK
    assert b"".join(download.streaming_content) == b"%PDF-1.4 award"


def test_a_document_of_another_type_is_refused(api_alice, tenant, cluster):
    body = request_body(tenant.project, cluster)
    body["document"] = SimpleUploadedFile("run.sh", b"#!/bin/sh", "text/x-sh")

    response = api_alice.post(BASE, body, format="multipart")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "document"


def test_a_supplement_credits_the_allocation_it_extends(
    api_alice, api_carol, alice, allocation, tenant, cluster
):
    body = request_body(
        tenant.project,
        cluster,
        kind="supplement",
        extends=str(allocation.uuid),
        amount="250",
        end_date=str(allocation.ends_at.date() + timedelta(days=30)),
    )
    rid = api_alice.post(BASE, body, format="json").json()["id"]
    api_alice.post(f"{BASE}{rid}/submit/")

    response = api_carol.post(f"{BASE}{rid}/approve/", {})

    assert response.status_code == HTTPStatus.OK
    assert response.json()["allocation"] is None
    assert response.json()["extends"] == str(allocation.uuid)
    allocation.refresh_from_db()
    assert allocation.credited == Decimal(1250)
    assert allocation.ends_at.date() == allocation.ends_at.date()
    assert allocation.ends_at.date() == (
        AllocationRequest.objects.get(uuid=rid).end_date + timedelta(days=1)
    )
    assert Allocation.objects.count() == 1


def test_a_renewal_creates_a_new_allocation_linked_to_the_old_one(
    api_alice, api_carol, allocation, tenant, cluster
):
    start = allocation.ends_at.date()
    body = request_body(
        tenant.project,
        cluster,
        kind="renewal",
        extends=str(allocation.uuid),
        start_date=str(start),
        end_date=str(start + timedelta(days=365)),
    )
    rid = api_alice.post(BASE, body, format="json").json()["id"]
    api_alice.post(f"{BASE}{rid}/submit/")
    api_carol.post(f"{BASE}{rid}/approve/", {})

    request = AllocationRequest.objects.get(uuid=rid)
    assert request.extends == allocation
    assert request.allocation != allocation
    assert request.allocation.credited == Decimal(5000)
    assert request.allocation.starts_at.date() == start


def test_renewals_must_name_an_allocation_of_the_same_project(
    api_alice, tenant, cluster, mallory_tenant
):
    theirs = factories.AllocationFactory(project=mallory_tenant.project, clusters=[cluster])

    missing = api_alice.post(
        BASE, request_body(tenant.project, cluster, kind="renewal"), format="json"
    )
    foreign = api_alice.post(
        BASE,
        request_body(tenant.project, cluster, kind="renewal", extends=str(theirs.uuid)),
        format="json",
    )

    assert missing.json()["field"] == "extends"
    assert foreign.json()["field"] == "extends"
    assert not AllocationRequest.objects.exists()


def test_the_request_history_records_who_changed_what(
    api_alice, api_carol, alice, carol, tenant, cluster
):
    request = draft_request(tenant.project, cluster, alice)
    api_alice.patch(f"{BASE}{request.uuid}/", {"amount": "6000"}, format="json")
    api_alice.post(f"{BASE}{request.uuid}/submit/")
    api_carol.post(f"{BASE}{request.uuid}/approve/", {"amount": "5500"}, format="json")

    records = list(request.history.order_by("history_date"))
    assert [r.history_user for r in records] == [alice, alice, alice, carol]
    assert [r.amount for r in records] == [
        Decimal(5000),
        Decimal(6000),
        Decimal(6000),
        Decimal(5500),
    ]
    assert records[-1].state == "approved"


def test_approval_in_the_past_is_refused(api_carol, alice, tenant, cluster):
    today = timezone.now().date()
    request = draft_request(
        tenant.project,
        cluster,
        alice,
        start_date=today - timedelta(days=30),
        end_date=today - timedelta(days=2),
    )
    allocation_request_submit(actor=alice, request=request)

    response = api_carol.post(f"{BASE}{request.uuid}/approve/", {})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "end_date"
