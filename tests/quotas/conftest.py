"""Quotas fixtures: a reviewer (carol), a facility admin (dave), and helpers to read the
ledger back as the reconcile rules see it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from quotas.models import EFFECTS, Allocation, AllocationRequest, Cluster, LedgerEntry
from quotas.policy import FACILITY_ADMINS_GROUP, REVIEWERS_GROUP
from quotas.reconcile import reconcile_ledger
from quotas.services import allocation_request_create
from tests import factories


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    """Test users need no strong hashing; PBKDF2 would dominate the suite's run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def carol(db: None) -> User:
    """An allocation reviewer with no project of her own."""
    user = factories.UserFactory(username="carol", email="carol@facility.example")
    user.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    return user


@pytest.fixture
def dave(db: None) -> User:
    """A facility admin (group member, not Django staff)."""
    user = factories.UserFactory(username="dave", email="dave@facility.example")
    user.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    return user


@pytest.fixture
def api_carol(carol: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(carol)
    return client


@pytest.fixture
def api_dave(dave: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(dave)
    return client


def ledger_sums(allocation: Allocation) -> tuple[Decimal, Decimal, Decimal]:
    """(credited, held, charged) recomputed from the allocation's ledger entries."""
    totals = [Decimal(0)] * 3
    for kind, amount in LedgerEntry.objects.filter(allocation=allocation).values_list(
        "kind", "amount"
    ):
        for i, factor in enumerate(EFFECTS[kind]):
            totals[i] += factor * amount
    return totals[0], totals[1], totals[2]


def counters(allocation: Allocation) -> tuple[Decimal, Decimal, Decimal]:
    allocation.refresh_from_db()
    return allocation.credited, allocation.held, allocation.charged


def assert_reconciles() -> None:
    report = reconcile_ledger(stale_hold_days=10_000)
    assert report.ok, report.format()


def request_body(project: Any, cluster: Cluster, **overrides: Any) -> dict[str, Any]:
    today = timezone.now().date()
    body = {
        "project": str(project.uuid),
        "title": "Protein folding at scale",
        "amount": "5000",
        "clusters": [cluster.name],
        "start_date": str(today),
        "end_date": str(today + timedelta(days=365)),
        "justification": "We fold proteins on H100s.",
        "funder": "NSF",
        "award_number": "OAC-1234567",
    }
    body.update(overrides)
    return body


def draft_request(
    project: Any, cluster: Cluster, actor: User, **overrides: Any
) -> AllocationRequest:
    today = timezone.now().date()
    fields: dict[str, Any] = {
        "title": "Protein folding at scale",
        "amount": Decimal("5000"),
        "clusters": [cluster],
        "start_date": today,
        "end_date": today + timedelta(days=365),
        "justification": "We fold proteins on H100s.",
        "funder": "NSF",
        "award_number": "OAC-1234567",
    }
    fields.update(overrides)
    return allocation_request_create(actor=actor, project=project, **fields)
