from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

from quotas.services import allocation_suspend, ledger_hold, ledger_settle


def test_members_see_balances_burn_and_the_ledger(web, bob, allocation, tenant, cluster):
    hold = ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=40, key="j1")
    ledger_settle(actor=None, hold=hold, actual=Decimal(21))
    client = web(bob)

    listing = client.get("/allocations/").content.decode()
    detail = client.get(f"/allocations/{allocation.uuid}/")

    assert "979" in listing
    assert detail.status_code == HTTPStatus.OK
    page = detail.content.decode()
    assert "21.00 SU in 7 days" in page
    assert "charge" in page and "release" in page


def test_a_suspension_reason_is_shown_to_the_project(web, alice, allocation):
    allocation_suspend(actor=None, allocation=allocation, reason="Invoice 7 is overdue")

    page = web(alice).get(f"/allocations/{allocation.uuid}/").content.decode()

    assert "Invoice 7 is overdue" in page


def test_the_allocation_history_page_names_who_changed_what(web, alice, dave, allocation):
    allocation_suspend(actor=dave, allocation=allocation, reason="audit")

    page = web(alice).get(f"/allocations/{allocation.uuid}/history/").content.decode()

    assert "dave" in page
    assert "suspended" in page and "audit" in page


def test_mallory_gets_404_on_every_allocation_page(web, mallory, allocation):
    client = web(mallory)
    for url in (f"/allocations/{allocation.uuid}/", f"/allocations/{allocation.uuid}/history/"):
        assert client.get(url).status_code == HTTPStatus.NOT_FOUND
    assert str(allocation.uuid) not in client.get("/allocations/").content.decode()


def test_the_clusters_page_shows_current_and_scheduled_rates(web, alice, cluster, dave):
    from datetime import timedelta

    from django.utils import timezone

    from quotas.services import rate_create

    rate_create(
        actor=dave,
        cluster=cluster,
        resource="cpu_hour",
        su_per_unit="0.25",
        effective_from=timezone.now() + timedelta(days=3),
    )

    page = web(alice).get("/clusters/").content.decode()

    assert "0.25" in page and "scheduled" in page
    # estimate(): 1 GPU-hour + 8 CPU-hours + 64 GB-hours at the rates in force
    assert "<strong>3.44 SU</strong> on h100" in page
    assert "<strong>2.44 SU</strong> on a100" in page
