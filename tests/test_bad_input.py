"""No input answers 500: a NUL character anywhere in a query string or a body is a 400 naming
the parameter (JSON under /api/, the 400 page elsewhere), and an unexpected error under /api/
answers the API's JSON error even in production, and is still logged with its traceback."""

from __future__ import annotations

import logging
from http import HTTPStatus

import pytest
from django.test import Client

from quotas.models import AllocationRequest, LedgerEntry

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _assert_nul_refused(response, field: str | None = None) -> None:
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "invalid_character"
    assert "NUL" in body["detail"]
    if field is not None:
        assert body["field"] == field
        assert f"'{field}'" in body["detail"]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"{API}/jobs/?cluster=%00", "cluster"),
        (f"{API}/jobs/?project=%00", "project"),
        (f"{API}/jobs/?state=run%00ning", "state"),
        (f"{API}/allocations/?status=%00", "status"),
        (f"{API}/allocations/?project=%00", "project"),
        (f"{API}/allocation-requests/?state=%00", "state"),
        (f"{API}/allocation-requests/?queue=1&state=%00", "state"),
    ],
)
def test_a_nul_in_an_api_query_parameter_is_a_400_naming_it(api_alice, tenant, url, field):
    response = api_alice.get(url)

    _assert_nul_refused(response, field)


def test_a_nul_in_the_ledger_kind_filter_is_a_400_naming_it(api_alice, allocation):
    response = api_alice.get(f"{API}/allocations/{allocation.uuid}/ledger/?kind=%00")

    _assert_nul_refused(response, "kind")


def test_a_nul_in_a_query_parameter_name_is_a_400(api_alice, tenant):
    response = api_alice.get(f"{API}/jobs/?a%00b=1")

    _assert_nul_refused(response)
    assert "a\\u0000b" in response.json()["detail"]


def test_a_nul_in_a_json_body_is_a_400_naming_where_and_creates_nothing(api_alice, tenant, cluster):
    body = {
        "project": str(tenant.project.uuid),
        "title": "More",
        "amount": "10",
        "clusters": ["\u0000"],
        "start_date": "2030-01-01",
        "end_date": "2030-02-01",
        "justification": "why",
    }

    response = api_alice.post(f"{API}/allocation-requests/", body, format="json")

    _assert_nul_refused(response)
    assert "clusters[0]" in response.json()["detail"]
    assert not AllocationRequest.objects.exists()


def test_a_nul_in_a_json_key_or_a_nested_value_is_a_400(api_alice, tenant, cluster):
    job = {"project": "folding", "cluster": "sim", "name": "x", "time_limit_minutes": 5}

    in_key = api_alice.post(f"{API}/jobs/", {**job, "env": {"A\u0000": "1"}}, format="json")
    in_value = api_alice.post(f"{API}/jobs/estimate/", {**job, "script": "a\u0000"}, format="json")

    _assert_nul_refused(in_key)
    assert "env.A\\u0000" in in_key.json()["detail"]
    _assert_nul_refused(in_value)
    assert in_value.json()["detail"].startswith("script:")


def test_a_nul_in_a_multipart_form_field_is_a_400_naming_it(api_alice, tenant, cluster):
    body = {
        "project": str(tenant.project.uuid),
        "title": "More",
        "amount": "10",
        "clusters": "\u0000",
        "start_date": "2030-01-01",
        "end_date": "2030-02-01",
        "justification": "why",
    }

    response = api_alice.post(f"{API}/allocation-requests/", body, format="multipart")

    _assert_nul_refused(response, "clusters")
    assert not AllocationRequest.objects.exists()


def test_a_nul_in_the_path_is_a_400(api_alice, tenant):
    response = api_alice.get(f"{API}/projects/%00/")

    _assert_nul_refused(response)


@pytest.mark.parametrize(
    "url",
    [
        "/jobs/?cluster=%00",
        "/jobs/?project=%00",
        "/jobs/?state=%00",
        "/allocations/?show=%00",
        "/allocation-requests/?state=%00",
        "/review/?state=%00",
    ],
)
def test_a_nul_in_a_page_query_parameter_is_the_400_page_naming_it(alice, tenant, url):
    client = Client()
    client.force_login(alice)

    response = client.get(url)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Bad request" in page
    assert "contains a NUL character" in page


def test_a_nul_in_a_posted_page_form_is_the_400_page_and_changes_nothing(alice, tenant):
    client = Client()
    client.force_login(alice)

    response = client.post("/organizations/new/", {"name": "Lab\u0000", "kind": "academic"})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "Form field &#x27;name&#x27; contains a NUL character" in response.content.decode()
    assert not tenant.org.__class__.objects.filter(name__startswith="Lab").exists()


@pytest.mark.urls("tests.urls_failing")
def test_an_unexpected_error_under_the_api_answers_json_500_and_is_logged(api_alice, caplog):
    api_alice.raise_request_exception = False

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = api_alice.get(f"{API}/_test/boom/")

    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal server error", "code": "server_error"}
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "boom in an API view" in str(record.exc_info[1])


@pytest.mark.urls("tests.urls_failing")
def test_an_unexpected_error_on_a_page_still_answers_the_html_500_page(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)

    response = client.get("/_test/boom/")

    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert response["Content-Type"].startswith("text/html")


def test_an_unknown_api_url_answers_json_404(api_alice):
    response = api_alice.get(f"{API}/no-such-thing/")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_a_ledger_kind_filter_still_filters(api_alice, allocation):
    response = api_alice.get(f"{API}/allocations/{allocation.uuid}/ledger/?kind=credit")

    assert response.status_code == HTTPStatus.OK
    kinds = {entry["kind"] for entry in response.json()["results"]}
    assert kinds == {LedgerEntry.Kind.CREDIT}


def test_an_unreadable_cursor_is_a_400_naming_it_not_a_404(api_alice, tenant):
    response = api_alice.get(f"{API}/projects/?cursor=not-a-cursor")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "cursor"
    assert "Invalid cursor" in response.json()["detail"]
