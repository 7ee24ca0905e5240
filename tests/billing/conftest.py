"""Billing fixtures: the local Stripe API server, keys pointing at it, signed webhooks.

Celery runs tasks in-process (task_always_eager) so a webhook's on-commit task really runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from accounts.models import Membership, User
from portal.celery import app as celery_app
from quotas.billing.models import BillingAccount, PostpaidPlan, SuPack
from tests import factories
from tests.billing.helpers import open_postpaid
from tests.stripe_server import FakeStripe, sign_payload

WEBHOOK_SECRET = "whsec_test_gpucommons"
WEBHOOK_URL = "/billing/stripe/webhook/"


@pytest.fixture
def stripe_server() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def eager_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    monkeypatch.setitem(celery_app.conf, "task_eager_propagates", True)


@pytest.fixture
def stripe_on(settings: Any, stripe_server: FakeStripe, eager_celery: None) -> FakeStripe:
    """Billing switched on, with the stripe library talking to the local server."""
    settings.STRIPE_SECRET_KEY = stripe_server.api_key
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_server.url
    settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300
    settings.BILLING_PAYMENT_GRACE_DAYS = 7
    settings.SITE_URL = "https://portal.example"
    return stripe_server


@pytest.fixture
def stripe_off(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_WEBHOOK_SECRET = ""
    settings.STRIPE_API_BASE = ""


@pytest.fixture
def pack(db: None, stripe_server: FakeStripe) -> SuPack:
    """500 SU for 99.00 EUR."""
    stripe_server.register_price("price_starter", unit_amount=9900, currency="eur")
    return SuPack.objects.create(
        name="Starter", slug="starter", su_amount=Decimal("500"), stripe_price_id="price_starter"
    )


@pytest.fixture
def plan(tenant: Any, cluster: Any, stripe_on: FakeStripe) -> PostpaidPlan:
    """A post-paid plan for alice's organization with a 1000 SU credit limit."""
    return open_postpaid(tenant.org, tenant.project, limit="1000")


@pytest.fixture
def customer(plan: PostpaidPlan, tenant: Any) -> str:
    """The Stripe customer id of alice's organization (made when the plan opened)."""
    return BillingAccount.objects.get(organization=tenant.org).stripe_customer_id


@pytest.fixture
def carol(tenant: Any) -> User:
    """The billing member of alice's organization (not in any project)."""
    user = factories.UserFactory(username="carol", email="carol@uni.example")
    Membership.objects.create(organization=tenant.org, user=user, role=Membership.Role.BILLING)
    return user


@pytest.fixture
def send_webhook(client: Client, django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """POST an event to the webhook signed like Stripe; on-commit tasks run before it returns."""

    def send(
        event: dict[str, Any],
        *,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        signature: str | None = "sign",
    ) -> Any:
        payload = json.dumps(event)
        headers = {}
        if signature == "sign":
            headers["HTTP_STRIPE_SIGNATURE"] = sign_payload(payload, secret, timestamp)
        elif signature is not None:
            headers["HTTP_STRIPE_SIGNATURE"] = signature
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                WEBHOOK_URL, data=payload, content_type="application/json", **headers
            )

    return send
