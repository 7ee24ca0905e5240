"""The admin pages of accounts open for staff; secrets are never addable there."""

from __future__ import annotations

import time
from http import HTTPStatus

import pytest
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
)
from django.http import HttpResponse
from django.test import Client

from accounts import services
from accounts.models import User
from tests import factories
from tests.conftest import can_sign_in
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_staff_can_browse_accounts_in_the_admin(web, alice, tenant):
    admin = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    services.api_token_create(actor=alice, name="cli")
    services.invitation_create(actor=alice, organization=tenant.org, email="carol@uni.example")
    client = web(admin)

    for model in ("user", "organization", "project", "invitation", "apitoken"):
        response = client.get(f"/django-admin/accounts/{model}/")
        assert response.status_code == HTTPStatus.OK, model
    assert client.get(
        f"/django-admin/accounts/organization/{tenant.org.pk}/change/"
    ).status_code == (HTTPStatus.OK)
    assert client.get("/django-admin/accounts/apitoken/add/").status_code == HTTPStatus.FORBIDDEN


# --- the admin signs in through allauth, never with a password alone --------------------------


def _totp_code(secret: str) -> str:
    # Avoid the last two seconds of a 30-second step so the code is still valid when posted.
    if time.time() % 30 > 28:
        time.sleep(2.5)
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


@pytest.fixture
def staff_with_totp() -> tuple[User, str]:
    staff = can_sign_in(factories.UserFactory(username="root", is_staff=True, is_superuser=True))
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    return staff, secret


def _admin_login(client: Client, password: str) -> HttpResponse:
    page = client.get("/django-admin/login/")
    token = page.cookies["csrftoken"].value if "csrftoken" in page.cookies else ""
    return client.post(
        "/django-admin/login/?next=/django-admin/",
        {"username": "root", "password": password, "csrfmiddlewaretoken": token},
    )


def test_the_admin_login_sends_to_the_portal_sign_in_and_a_password_alone_opens_nothing(
    staff_with_totp,
):
    client = Client()

    page = client.get("/django-admin/login/?next=/django-admin/")
    posted = _admin_login(client, PASSWORD)
    admin_home = client.get("/django-admin/")

    assert page.status_code == HTTPStatus.FOUND
    assert page["Location"] == "/accounts/login/?next=%2Fdjango-admin%2F"
    assert posted.status_code == HTTPStatus.FOUND
    assert posted["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session
    assert admin_home.status_code == HTTPStatus.FOUND
    assert admin_home["Location"].startswith("/django-admin/login/")


def test_thirty_wrong_admin_passwords_then_the_right_one_do_not_get_in(staff_with_totp):
    client = Client()
    for _ in range(30):
        _admin_login(client, "wrong password")

    last = _admin_login(client, PASSWORD)
    signed_in = Client().post("/accounts/login/", {"login": "root", "password": PASSWORD})

    assert last.status_code == HTTPStatus.FOUND
    assert last["Location"].startswith("/accounts/login/")
    assert client.get("/django-admin/").status_code == HTTPStatus.FOUND
    # The admin's attempts no longer reach a password check, so they spend no sign-in budget:
    # the real sign-in still asks for the second factor.
    assert signed_in["Location"] == "/accounts/2fa/authenticate/"


def test_wrong_passwords_on_the_portal_sign_in_lock_out_the_admin_too(staff_with_totp):
    for _ in range(5):
        Client().post("/accounts/login/", {"login": "root", "password": "wrong password"})
    client = Client()

    blocked = client.post(
        "/accounts/login/?next=/django-admin/", {"login": "root", "password": PASSWORD}
    )

    assert "Too many failed login attempts" in blocked.content.decode()
    assert client.get("/django-admin/").status_code == HTTPStatus.FOUND


def test_password_and_totp_code_through_allauth_open_the_admin(staff_with_totp):
    _staff, secret = staff_with_totp
    client = Client()
    to_login = client.get("/django-admin/")
    login_url = client.get(to_login["Location"])["Location"]

    password_step = client.post(login_url, {"login": "root", "password": PASSWORD})
    before_code = client.get("/django-admin/")
    code_step = client.post("/accounts/2fa/authenticate/", {"code": _totp_code(secret)})
    admin_home = client.get("/django-admin/")

    assert password_step.status_code == HTTPStatus.FOUND
    assert password_step["Location"] == "/accounts/2fa/authenticate/"
    assert before_code.status_code == HTTPStatus.FOUND
    assert code_step.status_code == HTTPStatus.FOUND
    assert code_step["Location"] == "/django-admin/"
    assert admin_home.status_code == HTTPStatus.OK
    assert "Site administration" in admin_home.content.decode()


def test_a_signed_in_user_who_is_not_staff_is_refused_the_admin_login(web, alice):
    response = web(alice).get("/django-admin/login/")

    assert response.status_code == HTTPStatus.FORBIDDEN
