"""Small steps shared by the billing tests."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

from accounts.models import Project, User
from quotas.billing.models import PostpaidPlan, Purchase
from quotas.billing.services import postpaid_plan_open
from quotas.models import Cluster, Hold
from quotas.services.ledger import ledger_hold, ledger_settle
from tests import factories

CHECKOUT_URL = "/api/v1/billing/checkout/"


def post_checkout(api: Any, project: Project, *, pack: str = "starter", quantity: int = 1) -> Any:
    """POST billing/checkout/ for `quantity` packs for `project`; the response, whatever it is."""
    return api.post(
        CHECKOUT_URL,
        {"pack": pack, "quantity": quantity, "project": str(project.uuid)},
        format="json",
    )


def checkout(api: Any, project: Project, *, pack: str = "starter", quantity: int = 1) -> Purchase:
    response = post_checkout(api, project, pack=pack, quantity=quantity)
    assert response.status_code == HTTPStatus.CREATED, response.json()
    return Purchase.objects.get(uuid=response.json()["purchase"])


def facility_admin() -> User:
    return factories.UserFactory(username="facility", email="facility@example.org", is_staff=True)


def open_postpaid(org: Any, project: Project, limit: str = "1000") -> PostpaidPlan:
    return postpaid_plan_open(
        actor=facility_admin(), organization=org, project=project, credit_limit=Decimal(limit)
    )


def spend(project: Project, cluster: Cluster, amount: str, key: str) -> Hold:
    """A job's whole life in the ledger: hold `amount`, then charge it."""
    hold = ledger_hold(
        actor=None, project=project, cluster=cluster, amount=Decimal(amount), key=key
    )
    return ledger_settle(actor=None, hold=hold, actual=Decimal(amount))
