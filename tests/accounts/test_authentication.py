"""Bearer token authentication: the scheme in any case, and a malformed Authorization header
is a 401 naming the expected form, never a server error."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from accounts import services

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _with_header(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_accepted_in_any_case(alice, scheme):
    _token, raw = services.api_token_create(actor=alice, name="cli")

    response = _with_header(f"{scheme} {raw}").get(f"{API}/me/")

    assert response.status_code == HTTPStatus.OK
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize(
    "header",
    [
        "\u00a0",  # a non-breaking space only
        "\u00a0\u00a0 \t",
        "Bearer",
        "Bearer ",
        "bearer a b",
        "Bearer\u00a0gpuc_x_y",  # NBSP is not a separator: one malformed part
        "\u00a0Bearer gpuc_x_y",
        "Bearer gpuc_\u00e9_y",  # not ASCII
    ],
)
def test_a_malformed_authorization_header_is_a_401_naming_the_expected_form(alice, header):
    response = _with_header(header).get(f"{API}/me/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    body = response.json()
    assert body["code"] == "authentication_failed"
    assert "Bearer <token>" in body["detail"] or body["detail"] == "Invalid API token"
    assert response["WWW-Authenticate"] == "Bearer"


def test_another_scheme_is_left_to_the_other_authenticators(alice):
    response = _with_header("Basic YWxpY2U6eA==").get(f"{API}/me/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json()["code"] == "not_authenticated"
