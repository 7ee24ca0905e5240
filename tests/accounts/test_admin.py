"""The admin pages of accounts open for staff; secrets are never addable there."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from accounts import services
from tests import factories

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
