"""Mail that works: links from SITE_URL (never the request's host), subjects and signatures
with SITE_NAME, for allauth's mails and ours alike."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from accounts import services
from quotas import notifications

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "https://gpu.example.org/portal"
    settings.SITE_NAME = "Example Compute"
    settings.ALLOWED_HOSTS = ["evil.example", "testserver"]


def test_the_sign_up_verification_link_is_on_site_url_even_when_the_host_header_lies():
    Client(HTTP_HOST="evil.example").post(
        "/accounts/signup/",
        {
            "email": "carol@uni.example",
            "username": "carol",
            "password1": "a long passphrase for carol 42",
            "password2": "a long passphrase for carol 42",
        },
    )

    message = mail.outbox[-1]
    assert message.subject.startswith("[Example Compute] ")
    assert re.search(r"https://gpu\.example\.org/portal/accounts/confirm-email/\S+/", message.body)
    assert "evil.example" not in message.body
    assert "Example Compute" in message.body


def test_the_password_reset_link_is_on_site_url(alice):
    Client(HTTP_HOST="evil.example").post(
        "/accounts/password/reset/", {"email": "alice@uni.example"}
    )

    body = mail.outbox[-1].body
    assert "https://gpu.example.org/portal/accounts/password/reset/key/" in body
    assert "evil.example" not in body


def test_the_invitation_is_linked_on_site_url_and_signed_with_the_site_name(
    alice, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.invitation_create(actor=alice, organization=tenant.org, email="carol@uni.example")

    message = mail.outbox[-1]
    assert message.subject == "You are invited to Vision Lab on Example Compute"
    assert "https://gpu.example.org/portal/invitations/#" in message.body
    assert message.body.rstrip().endswith("Example Compute\nhttps://gpu.example.org/portal/")


def test_an_allocation_notice_links_on_site_url_and_is_signed(
    allocation, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        notifications.expiry_reminder(allocation=allocation, days=7)

    message = mail.outbox[-1]
    assert message.subject.startswith("[Example Compute] ")
    assert f"https://gpu.example.org/portal/allocations/{allocation.uuid}/" in message.body
    assert message.body.endswith("-- \nExample Compute\nhttps://gpu.example.org/portal/\n")
