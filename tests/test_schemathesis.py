"""Every operation of the OpenAPI schema, fuzzed by schemathesis against a live portal with a
real API token: no answer is a server error, and every answer (status, content type, body)
is one the schema documents.

The portal runs in pytest-django's live server (real HTTP, PostgreSQL, DEBUG off as in
production) with a bootstrap_demo tenant on the simulated backend (nothing is ever run on
this host), Celery eager, and billing switched on against the local Stripe server. Half of
the generated projects, clusters and path ids are real objects of the demo tenant (a job, an
allocation, a draft grant request), so the fuzzing reaches the services and not only the 404s.
Bounded: a fixed seed and a few examples per operation and generation mode (positive and
negative data), so the run is repeatable and takes a few minutes on two cores
(GPUC_SCHEMATHESIS_MAX_EXAMPLES raises the bound for a deeper run). Nothing is excluded: the
Stripe webhook is not an API operation (it is signed by Stripe and is not in the schema).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
import requests
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
    demo = json.loads(out.getvalue())
    ids = _real_objects(live_server.url, demo)
    project = demo["project"]
    real = {  # half of the generated values of these parameters are real objects of the demo
        "projects": [project["uuid"], project["slug"]],
        "clusters": [demo["cluster"]["name"]],
        "organizations": [demo["organization"]["uuid"]],
        "jobs": [ids["job"]],
        "objects": [
            project["uuid"],
            demo["organization"]["uuid"],
            demo["allocation"]["uuid"],
            ids["request"],
        ],
    }
    bindings = {
        "query.project": "projects",
        "query.cluster": "clusters",
        "body.project": "projects",
        "body.cluster": "clusters",
        "body.clusters[*]": "clusters",
        "body.organization": "organizations",
        "path.job_uuid": "jobs",
        "path.uuid": "objects",
    }
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "headers": {"Authorization": f"Bearer {demo['token']}"},
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "dictionaries": {name: {"values": values} for name, values in real.items()},
            "parameters": {
                key: {"dictionary": name, "probability": 0.5} for key, name in bindings.items()
            },
        }
    )
    yield schemathesis.openapi.from_url(f"{live_server.url}/api/schema/", config=config)
    stripe.stop()


def _real_objects(base: str, demo: dict[str, Any]) -> dict[str, str]:
    """A job and a draft allocation request of the demo project, made through the API."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {demo['token']}"
    job = session.post(
        f"{base}/api/v1/jobs/",
        json={
            "project": demo["project"]["uuid"],
            "cluster": demo["cluster"]["name"],
            "name": "fuzz",
            "script": "#!/bin/sh\ntrue\n",
            "gpus": 1,
            "time_limit_minutes": 10,
        },
        timeout=30,
    )
    assert job.status_code == HTTPStatus.CREATED, job.text
    request = session.post(
        f"{base}/api/v1/allocation-requests/",
        json={
            "project": demo["project"]["uuid"],
            "title": "More",
            "amount": "100",
            "clusters": [demo["cluster"]["name"]],
            "start_date": "2030-01-01",
            "end_date": "2030-06-01",
            "justification": "Fuzzing the workflow.",
        },
        timeout=30,
    )
    assert request.status_code == HTTPStatus.CREATED, request.text
    return {"job": job.json()["id"], "request": request.json()["id"]}


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
