"""Every operation of the OpenAPI schema, fuzzed by schemathesis against a live portal with a
real API token: no answer is a server error, and every answer (status, content type, body)
is one the schema documents.

The portal runs in pytest-django's live server (real HTTP, PostgreSQL, DEBUG off as in
production) with a bootstrap_demo tenant on the simulated backend (nothing is ever run on
this host), Celery eager, and billing switched on against the local Stripe server. Bounded:
a fixed seed and a few examples per operation and generation mode (positive and negative
data), so the run is repeatable and takes a few minutes on two cores. Nothing is excluded:
the Stripe webhook is not an API operation (it is signed by Stripe and is not in the schema).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from django.core.management import call_command
from schemathesis.engine import Status, events

from portal.celery import app as celery_app
from quotas.billing.models import SuPack
from tests.stripe_server import FakeStripe

MAX_EXAMPLES = int(os.environ.get("GPUC_SCHEMATHESIS_MAX_EXAMPLES", "10"))
SEED = 20261206
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def portal_api(
    live_server: Any, transactional_db: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The portal's schema, loaded from the live server, with a demo tenant's token."""
    stripe = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = stripe.api_key
    settings.STRIPE_WEBHOOK_SECRET = "whsec_schemathesis"
    settings.STRIPE_API_BASE = stripe.url
    settings.SITE_URL = live_server.url
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    stripe.register_price("price_starter", unit_amount=9900, currency="eur")
    SuPack.objects.create(
        name="Starter", slug="starter", su_amount=Decimal("500"), stripe_price_id="price_starter"
    )
    out = io.StringIO()
    call_command("bootstrap_demo", "--json", "--backend", "simulated", stdout=out)
    token = json.loads(out.getvalue())["token"]
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )
    yield schemathesis.openapi.from_url(f"{live_server.url}/api/schema/", config=config)
    stripe.stop()


def _problems(event: events.EngineEvent) -> list[str]:
    if isinstance(event, events.ScenarioFinished) and event.status in (
        Status.FAILURE,
        Status.ERROR,
    ):
        return [
            f"{event.label} [{event.phase}]: {check.name}: {check.failure_info.failure.title}\n"
            f"{check.failure_info.failure.message}\n{check.failure_info.code_sample}"
            for checks in event.recorder.checks.values()
            for check in checks
            if check.failure_info is not None
        ]
    if isinstance(event, events.NonFatalError):
        return [f"{event.label}: {event.value!r}\n{event.info.code_sample or ''}"]
    if isinstance(event, events.FatalError):
        return [f"schemathesis failed: {event.exception!r}"]
    return []


def test_every_operation_answers_as_documented_and_never_with_a_server_error(portal_api):
    problems: list[str] = []
    operations = set()
    for event in schemathesis.engine.from_schema(portal_api).execute():
        if isinstance(event, events.ScenarioFinished) and event.label:
            operations.add(event.label)
        problems.extend(_problems(event))

    assert len(operations) > 40  # every operation of the schema ran
    assert not problems, f"{len(problems)} problems:\n\n" + "\n\n".join(sorted(set(problems)))
