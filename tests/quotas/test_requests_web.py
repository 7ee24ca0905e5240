from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from quotas.models import Allocation, AllocationRequest, LedgerEntry
from quotas.services import allocation_request_submit
from tests.quotas.conftest import draft_request


def form_data(tenant, cluster, **overrides):
    today = timezone.now().date()
    data = {
        "project": str(tenant.project.uuid),
        "kind": "new",
        "title": "Cryo-EM reconstruction",
        "amount": "2500",
        "clusters": [str(cluster.pk)],
        "start_date": str(today),
        "end_date": str(today + timedelta(days=180)),
        "justification": "Reconstructing 40 datasets.",
        "funder": "ERC",
        "award_number": "StG-101",
    }
    data.update(overrides)
    return data


def test_the_full_flow_request_changes_resubmit_approve_on_the_web(
    web, alice, carol, tenant, cluster, django_capture_on_commit_callbacks
):
    pi, reviewer = web(alice), web(carol)
    assert pi.get("/allocation-requests/new/").status_code == HTTPStatus.OK
    data = form_data(tenant, cluster)
    data["document"] = SimpleUploadedFile("proposal.pdf", b"%PDF proposal", "application/pdf")
    data["save"] = "1"

    response = pi.post("/allocation-requests/new/", data)

    assert response.status_code == HTTPStatus.FOUND
    request = AllocationRequest.objects.get()
    assert response["Location"] == f"/allocation-requests/{request.uuid}/"
    assert (request.state, request.amount, request.requested_by) == ("draft", 2500, alice)
    assert request.document.read() == b"%PDF proposal"
    detail = f"/allocation-requests/{request.uuid}/"

    with django_capture_on_commit_callbacks(execute=True):
        assert pi.post(f"{detail}submit/").status_code == HTTPStatus.FOUND
    assert sorted(m.to[0] for m in mail.outbox) == [alice.email, carol.email]

    queue = reviewer.get("/review/")
    assert queue.status_code == HTTPStatus.OK
    assert "Cryo-EM reconstruction" in queue.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = reviewer.post(
            f"{detail}review/", {"action": "request_changes", "comment": "Add the dataset list."}
        )
    assert response.status_code == HTTPStatus.FOUND
    request.refresh_from_db()
    assert request.state == "changes_requested"
    assert mail.outbox[-1].to == [alice.email]
    assert "Add the dataset list." in mail.outbox[-1].body

    edit = pi.get(f"{detail}edit/")
    assert edit.status_code == HTTPStatus.OK
    edited = form_data(tenant, cluster, justification="Datasets: EMPIAR-1..40", submit="1")
    with django_capture_on_commit_callbacks(execute=True):
        response = pi.post(f"{detail}edit/", edited)
    assert response.status_code == HTTPStatus.FOUND
    request.refresh_from_db()
    assert (request.state, request.justification) == ("submitted", "Datasets: EMPIAR-1..40")

    end = request.end_date + timedelta(days=30)
    with django_capture_on_commit_callbacks(execute=True):
        response = reviewer.post(
            f"{detail}review/",
            {"action": "approve", "amount": "2000", "end_date": str(end), "comment": "ok"},
        )
    assert response.status_code == HTTPStatus.FOUND
    request.refresh_from_db()
    assert request.state == "approved"
    assert request.allocation.credited == Decimal(2000)
    assert request.allocation.ends_at.date() == end + timedelta(days=1)
    assert "approved" in mail.outbox[-1].subject
    assert mail.outbox[-1].to == [alice.email]

    page = pi.get(detail).content.decode()
    for step in ("draft → submitted", "submitted → changes_requested", "submitted → approved"):
        assert step in page
    assert "Add the dataset list." in page
    assert f"/allocations/{request.allocation.uuid}/" in page
    history = pi.get(f"{detail}history/").content.decode()
    assert "carol" in history and "alice" in history


def test_a_member_who_is_not_a_reviewer_cannot_approve_on_the_web(web, alice, bob, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)

    response = web(bob).post(f"/allocation-requests/{request.uuid}/review/", {"action": "approve"})

    assert response.status_code == HTTPStatus.FORBIDDEN
    request.refresh_from_db()
    assert request.state == "submitted"
    assert not Allocation.objects.exists()
    assert web(bob).get("/review/").status_code == HTTPStatus.NOT_FOUND


def test_bad_web_input_shows_errors_and_creates_nothing(web, alice, tenant, cluster):
    client = web(alice)
    bad = form_data(tenant, cluster, amount="-3", end_date="2000-01-01", save="1")

    response = client.post("/allocation-requests/new/", bad)

    assert response.status_code == HTTPStatus.OK
    errors = response.context["form"].errors
    assert set(errors) >= {"amount", "end_date"}
    assert not AllocationRequest.objects.exists()


def test_a_web_request_for_a_cluster_the_project_may_not_use_names_clusters(
    web, alice, tenant, cluster
):
    cluster.options = {**cluster.options, "allowed_organizations": ["someone-else"]}
    cluster.save()

    response = web(alice).post("/allocation-requests/new/", form_data(tenant, cluster, save="1"))

    assert response.status_code == HTTPStatus.OK
    assert "clusters" in response.context["form"].errors
    assert not AllocationRequest.objects.exists()


def test_reject_without_a_comment_changes_nothing_on_the_web(web, alice, carol, tenant, cluster):
    request = draft_request(tenant.project, cluster, alice)
    allocation_request_submit(actor=alice, request=request)

    response = web(carol).post(
        f"/allocation-requests/{request.uuid}/review/", {"action": "reject"}, follow=True
    )

    assert "A comment is required" in response.content.decode()
    request.refresh_from_db()
    assert request.state == "submitted"
    assert not LedgerEntry.objects.exists()


def test_mallory_gets_404_on_every_request_page(web, mallory, alice, tenant, cluster):
    request = draft_request(
        tenant.project,
        cluster,
        alice,
        document=SimpleUploadedFile("a.pdf", b"%PDF", "application/pdf"),
    )
    allocation_request_submit(actor=alice, request=request)
    client = web(mallory)
    base = f"/allocation-requests/{request.uuid}/"

    for url in (base, f"{base}edit/", f"{base}document/", f"{base}history/", "/review/"):
        assert client.get(url).status_code == HTTPStatus.NOT_FOUND, url
    for url, data in (
        (f"{base}submit/", {}),
        (f"{base}review/", {"action": "approve"}),
        (f"{base}edit/", {"title": "mine now"}),
    ):
        assert client.post(url, data).status_code == HTTPStatus.NOT_FOUND, url
    assert "Protein folding" not in client.get("/allocation-requests/").content.decode()
    request.refresh_from_db()
    assert request.state == "submitted"


def test_the_renewal_link_prefills_the_form_from_the_allocation(web, alice, allocation, cluster):
    response = web(alice).get(f"/allocation-requests/new/?extends={allocation.uuid}&kind=renewal")

    form = response.context["form"]
    assert form.initial["extends"] == allocation
    assert form.initial["kind"] == "renewal"
    assert form.initial["clusters"] == [cluster]
    assert form.initial["start_date"] == allocation.ends_at.date()


def test_an_outsiders_allocation_cannot_be_prefilled(web, mallory, allocation):
    response = web(mallory).get(f"/allocation-requests/new/?extends={allocation.uuid}")

    assert "extends" not in response.context["form"].initial
