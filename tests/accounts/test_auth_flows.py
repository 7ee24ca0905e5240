"""Sign-up with mandatory email verification, sign-in, TOTP two-factor, rate limits, providers."""

from __future__ import annotations

import re
import time
from http import HTTPStatus

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from accounts.models import User
from portal import settings as portal_settings
from tests.conftest import can_sign_in
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a long passphrase for carol 42"


def _signup(client: Client) -> object:
    return client.post(
        "/accounts/signup/",
        {
            "email": "carol@uni.example",
            "username": "carol",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )


def _login(client: Client, login: str, password: str) -> object:
    return client.post("/accounts/login/", {"login": login, "password": password})


def test_sign_up_sends_a_verification_link_and_following_it_allows_sign_in(client):
    signed_up = _signup(client)

    assert signed_up.status_code == HTTPStatus.FOUND
    assert signed_up["Location"] == "/accounts/confirm-email/"
    user = User.objects.get(username="carol")
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1
    link = re.search(
        re.escape(settings.SITE_URL) + r"(/accounts/confirm-email/[^/\s]+/)", mail.outbox[0].body
    )
    assert link is not None

    confirmed = client.post(link.group(1))

    assert confirmed.status_code == HTTPStatus.FOUND
    assert EmailAddress.objects.get(user=user).verified
    fresh = Client()
    signed_in = _login(fresh, "carol@uni.example", NEW_PASSWORD)
    assert signed_in.status_code == HTTPStatus.FOUND
    assert signed_in["Location"] == "/"
    assert fresh.get("/").status_code == HTTPStatus.OK


def test_an_unverified_user_cannot_reach_the_dashboard(client):
    _signup(client)

    dashboard = client.get("/")
    attempt = _login(Client(), "carol", NEW_PASSWORD)

    assert dashboard.status_code == HTTPStatus.FOUND
    assert dashboard["Location"].startswith("/accounts/login/")
    assert attempt.status_code == HTTPStatus.FOUND
    assert attempt["Location"] == "/accounts/confirm-email/"
    assert "_auth_user_id" not in attempt.wsgi_request.session


def test_sign_in_works_by_username_or_email(alice):
    can_sign_in(alice)

    by_username = _login(Client(), "alice", PASSWORD)
    by_email = _login(Client(), "alice@uni.example", PASSWORD)

    assert by_username.status_code == by_email.status_code == HTTPStatus.FOUND
    assert by_username["Location"] == by_email["Location"] == "/"


def test_repeated_failed_sign_ins_are_rate_limited(alice):
    can_sign_in(alice)
    for _ in range(5):
        failed = _login(Client(), "alice", "wrong password")
        assert failed.status_code == HTTPStatus.OK

    blocked = _login(Client(), "alice", PASSWORD)

    assert blocked.status_code in (HTTPStatus.OK, HTTPStatus.TOO_MANY_REQUESTS)
    assert "Too many failed login attempts" in blocked.content.decode()
    assert "_auth_user_id" not in blocked.wsgi_request.session


def _totp_code(secret: str) -> str:
    # Avoid the last two seconds of a 30-second step so the code is still valid when posted.
    if time.time() % 30 > 28:
        time.sleep(2.5)
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def test_totp_enrolment_then_sign_in_asks_for_the_code(alice):
    can_sign_in(alice)
    client = Client()
    assert _login(client, "alice", PASSWORD)["Location"] == "/"
    # Adding an authenticator is a sensitive change: allauth asks for the password again.
    asked = client.get("/accounts/2fa/totp/activate/")
    assert asked["Location"].startswith("/accounts/reauthenticate/")
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == HTTPStatus.OK
    secret = page.context["form"].secret

    activated = client.post("/accounts/2fa/totp/activate/", {"code": _totp_code(secret)})

    assert activated.status_code == HTTPStatus.FOUND
    assert Authenticator.objects.filter(user=alice, type=Authenticator.Type.TOTP).exists()

    later = Client()
    password_step = _login(later, "alice", PASSWORD)
    assert password_step.status_code == HTTPStatus.FOUND
    assert password_step["Location"] == "/accounts/2fa/authenticate/"
    assert later.get("/").status_code == HTTPStatus.FOUND  # not signed in yet

    good = _totp_code(secret)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    refused = later.post("/accounts/2fa/authenticate/", {"code": wrong})
    assert refused.status_code == HTTPStatus.OK
    assert "Incorrect code" in refused.content.decode()
    assert later.get("/").status_code == HTTPStatus.FOUND

    accepted = later.post("/accounts/2fa/authenticate/", {"code": _totp_code(secret)})
    assert accepted.status_code == HTTPStatus.FOUND
    assert later.get("/").status_code == HTTPStatus.OK


def test_allauth_pages_use_the_portal_layout(client):
    response = client.get("/accounts/login/")

    page = response.content.decode()
    assert response.status_code == HTTPStatus.OK
    assert "<title>" in page and "· GPU Commons</title>" in page
    assert "vendor/pico" in page
    assert 'class="topbar"' in page


# --- social providers switched on by environment variables -----------------------------------


PROVIDER_ENV = {
    "GITHUB_CLIENT_ID": "gh-id",
    "GITHUB_SECRET": "gh-secret",
    "GOOGLE_CLIENT_ID": "google-id",
    "GOOGLE_SECRET": "google-secret",
    "ORCID_CLIENT_ID": "orcid-id",
    "ORCID_SECRET": "orcid-secret",
    "OIDC_CLIENT_ID": "oidc-id",
    "OIDC_SECRET": "oidc-secret",
    "OIDC_SERVER_URL": "https://idp.uni.example",
    "SAML_IDP_ENTITY_ID": "https://idp.uni.example/saml",
    "SAML_IDP_METADATA_URL": "https://idp.uni.example/saml/metadata",
}


def test_no_social_provider_is_enabled_without_its_environment_variables(monkeypatch, client):
    for var in PROVIDER_ENV:
        monkeypatch.delenv(var, raising=False)

    assert portal_settings._social_providers() == {}


def test_each_provider_appears_on_the_sign_in_page_when_configured(monkeypatch, settings, client):
    for var, value in PROVIDER_ENV.items():
        monkeypatch.setenv(var, value)
    settings.SOCIALACCOUNT_PROVIDERS = portal_settings._social_providers()

    page = client.get("/accounts/login/").content.decode()

    assert set(settings.SOCIALACCOUNT_PROVIDERS) == {
        "github",
        "google",
        "orcid",
        "openid_connect",
        "saml",
    }
    for url in (
        "/accounts/github/login/",
        "/accounts/google/login/",
        "/accounts/orcid/login/",
        "/accounts/oidc/institution/login/",
        "/accounts/saml/gpucommons/login/",
    ):
        assert url in page, url
    github = client.post("/accounts/github/login/")
    assert github.status_code == HTTPStatus.FOUND
    assert github["Location"].startswith("https://github.com/login/oauth/authorize?client_id=gh-id")


def test_saml_without_metadata_or_sso_url_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("SAML_IDP_ENTITY_ID", "https://idp.uni.example/saml")
    for var in ("SAML_IDP_METADATA_URL", "SAML_IDP_SSO_URL", "SAML_IDP_X509CERT"):
        monkeypatch.delenv(var, raising=False)

    with pytest.raises(ImproperlyConfigured):
        portal_settings._social_providers()


def test_saml_can_be_configured_with_an_sso_url_and_certificate(monkeypatch):
    monkeypatch.setenv("SAML_IDP_ENTITY_ID", "https://idp.uni.example/saml")
    monkeypatch.delenv("SAML_IDP_METADATA_URL", raising=False)
    monkeypatch.setenv("SAML_IDP_SSO_URL", "https://idp.uni.example/sso")
    monkeypatch.setenv("SAML_IDP_X509CERT", "MIIC...")

    idp = portal_settings._social_providers()["saml"]["APPS"][0]["settings"]["idp"]

    assert idp == {
        "entity_id": "https://idp.uni.example/saml",
        "sso_url": "https://idp.uni.example/sso",
        "x509cert": "MIIC...",
    }
