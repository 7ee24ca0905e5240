"""Helpers for account tests: verified email addresses, signed-in web clients, a clean cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from allauth.account.models import EmailAddress
from django.core.cache import cache
from django.test import Client

from accounts.models import User

PASSWORD = "correct horse battery staple"  # the factories' password


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    # allauth rate limits and used TOTP codes live in the (Redis) cache: start each test afresh.
    cache.clear()
    yield
    cache.clear()


def can_sign_in(user: User) -> User:
    """Give the user the factories' password (the factory does not save it) and a verified email."""
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    verify_email(user)
    return user


def verify_email(user: User) -> EmailAddress:
    address, _ = EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )
    return address


@pytest.fixture
def web() -> Callable[[User], Client]:
    """A Django test client signed in as the user (email verified)."""

    def login(user: User) -> Client:
        can_sign_in(user)
        client = Client()
        client.force_login(user)
        return client

    return login
