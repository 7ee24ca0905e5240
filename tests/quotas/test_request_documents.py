"""A grant request's document is private: stored under a random name, never at a /media/ URL,
streamed only to those who may see the request (everyone else gets 404)."""

from __future__ import annotations

import importlib
import re
from http import HTTPStatus
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import encode_multipart
from django.urls import clear_url_caches
from rest_framework.test import APIClient

from accounts.models import User
from portal import checks as portal_checks
from portal import settings as portal_settings
from quotas.documents import display_name, storage_path
from quotas.models import AllocationRequest
from quotas.services import allocation_request_submit
from tests.quotas.conftest import draft_request, request_body

API = "/api/v1/allocation-requests/"
PDF = b"%PDF-1.4\n% the award letter \x00\xff\n%%EOF\n"
STORED = re.compile(r"^allocation-requests/[0-9a-f]{32}\.pdf$")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture
def submitted(alice, tenant, cluster) -> AllocationRequest:
    request = draft_request(
        tenant.project,
        cluster,
        alice,
        document=SimpleUploadedFile("award letter.pdf", PDF, "application/pdf"),
    )
    allocation_request_submit(actor=alice, request=request)
    return request


def _web(user: User | None) -> Client:
    client = Client()
    if user is not None:
        user.save(update_fields=["password"])
        client.force_login(user)
    return client


def _api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_the_requester_downloads_the_exact_bytes_as_an_attachment(alice, submitted):
    response = _web(alice).get(f"/allocation-requests/{submitted.uuid}/document/")

    assert response.status_code == HTTPStatus.OK
    assert _body(response) == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="award letter.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_requester_downloads_it_by_api_from_the_link_in_the_request(alice, submitted):
    client = _api(alice)
    detail = client.get(f"{API}{submitted.uuid}/").json()

    response = client.get(detail["document"], HTTP_ACCEPT="application/pdf")

    assert detail["document"] == f"{API}{submitted.uuid}/document/"
    assert detail["document_name"] == "award letter.pdf"
    assert response.status_code == HTTPStatus.OK
    assert _body(response) == PDF
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"


def test_an_unrelated_reviewer_downloads_the_exact_bytes(carol, submitted):
    web = _web(carol).get(f"/allocation-requests/{submitted.uuid}/document/")
    api = _api(carol).get(f"{API}{submitted.uuid}/document/")

    assert (web.status_code, api.status_code) == (HTTPStatus.OK, HTTPStatus.OK)
    assert _body(web) == _body(api) == PDF


def test_anonymous_and_mallory_get_404_for_the_document(mallory, submitted):
    url = f"/allocation-requests/{submitted.uuid}/document/"

    anonymous = _web(None).get(url)
    outsider = _web(mallory).get(url)
    outsider_api = _api(mallory).get(f"{API}{submitted.uuid}/document/")

    assert anonymous.status_code == HTTPStatus.NOT_FOUND
    assert outsider.status_code == HTTPStatus.NOT_FOUND
    assert outsider_api.status_code == HTTPStatus.NOT_FOUND
    assert outsider_api.json()["code"] == "not_found"
    assert PDF not in anonymous.content + outsider.content + outsider_api.content


def test_the_api_wants_credentials_and_reveals_nothing_without_them(submitted):
    response = APIClient().get(f"{API}{submitted.uuid}/document/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert PDF not in response.content


def test_a_reviewer_does_not_get_the_document_of_a_draft(carol, alice, tenant, cluster):
    draft = draft_request(
        tenant.project,
        cluster,
        alice,
        document=SimpleUploadedFile("draft.pdf", PDF, "application/pdf"),
    )

    response = _web(carol).get(f"/allocation-requests/{draft.uuid}/document/")

    assert response.status_code == HTTPStatus.NOT_FOUND


def test_the_old_media_url_answers_404_even_with_debug_on(settings, alice, submitted, media_root):
    stored = media_root / submitted.document.name
    assert stored.read_bytes() == PDF
    import portal.urls

    settings.DEBUG = True
    importlib.reload(portal.urls)  # the URLconf as a development server builds it
    clear_url_caches()
    try:
        for client in (_web(None), _web(alice)):
            response = client.get(f"/media/{submitted.document.name}")
            assert response.status_code == HTTPStatus.NOT_FOUND
            assert PDF not in response.content
    finally:
        settings.DEBUG = False
        importlib.reload(portal.urls)
        clear_url_caches()


def test_the_stored_name_is_random_and_not_the_uploaded_one(alice, tenant, cluster, submitted):
    again = draft_request(
        tenant.project,
        cluster,
        alice,
        document=SimpleUploadedFile("award letter.pdf", PDF, "application/pdf"),
    )
    submitted.refresh_from_db()

    assert STORED.match(submitted.document.name), submitted.document.name
    assert STORED.match(again.document.name), again.document.name
    assert submitted.document.name != again.document.name
    assert "award" not in submitted.document.name
    assert submitted.document_name == again.document_name == "award letter.pdf"


@pytest.mark.parametrize(
    "filename",
    [
        "../../../../outside.pdf",
        "..\\..\\..\\outside.pdf",
        "/etc/outside.pdf",
        "..%2F..%2Foutside.pdf",
    ],
)
def test_a_traversal_in_the_upload_filename_is_neutralised(
    alice, tenant, cluster, media_root, filename
):
    body = encode_multipart("BoUnDaRy", request_body(tenant.project, cluster))
    # The file part with its raw, hostile filename (the test client would clean it first).
    file_part = (
        (
            "--BoUnDaRy\r\n"
            f'Content-Disposition: form-data; name="document"; filename="{filename}"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + PDF
        + b"\r\n"
    )
    body = body.replace(b"--BoUnDaRy--", file_part + b"--BoUnDaRy--")

    response = _api(alice).post(
        API, data=body, content_type="multipart/form-data; boundary=BoUnDaRy"
    )

    assert response.status_code == HTTPStatus.CREATED, response.json()
    created = AllocationRequest.objects.get(uuid=response.json()["id"])
    assert STORED.match(created.document.name), created.document.name
    assert (media_root / created.document.name).read_bytes() == PDF
    assert "/" not in created.document_name and "\\" not in created.document_name
    assert created.document_name.endswith("outside.pdf")
    assert not list(media_root.parent.glob("**/outside.pdf"))
    assert [p.name for p in media_root.rglob("*") if p.is_file()] == [
        Path(created.document.name).name
    ]


@pytest.mark.parametrize(
    ("uploaded", "shown"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\boot.ini.pdf", "boot.ini.pdf"),
        ("a\r\nX-Evil: 1.pdf", "aX-Evil: 1.pdf"),
        ("..", "document"),
        ("", "document"),
    ],
)
def test_the_display_name_keeps_only_a_clean_last_component(uploaded, shown):
    assert display_name(uploaded) == shown
    stored = storage_path(None, uploaded)
    assert stored.startswith("allocation-requests/")
    assert ".." not in stored
    assert "\\" not in stored


def test_a_media_root_inside_the_static_folders_is_a_startup_error(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    settings.MEDIA_ROOT = tmp_path / "static" / "media"

    errors = portal_checks.check_media_is_private()

    assert [e.id for e in errors] == ["portal.E110"]


def test_the_configured_media_root_is_outside_the_static_folders(settings):
    settings.MEDIA_ROOT = portal_settings.MEDIA_ROOT  # as configured, not this module's tmp dir

    assert portal_checks.check_media_is_private() == []
    media = Path(settings.MEDIA_ROOT).resolve()
    assert Path(settings.STATIC_ROOT).resolve() not in media.parents
