from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.utils import timezone

from quotas.models import Allocation, LedgerEntry
from quotas.services import ledger_hold, ledger_settle
from tests import factories


@pytest.fixture
def staff(web, dave):
    return web(dave)


def test_the_staff_area_is_404_for_everyone_else(web, alice, mallory, carol, allocation):
    for user in (alice, mallory, carol):
        client = web(user)
        for url in (
            "/manage/",
            f"/manage/allocations/{allocation.uuid}/",
            f"/manage/projects/{allocation.project.uuid}/",
            f"/manage/organizations/{allocation.project.organization.uuid}/",
            "/manage/usage/",
            "/manage/clusters/",
        ):
            assert client.get(url).status_code == HTTPStatus.NOT_FOUND, (user, url)
        response = client.post(
            f"/manage/allocations/{allocation.uuid}/adjust/",
            {"amount": "100", "memo": "gift", "key": "k"},
        )
        assert response.status_code == HTTPStatus.NOT_FOUND
    allocation.refresh_from_db()
    assert allocation.credited == Decimal(1000)


def test_staff_search_finds_organizations_and_projects(staff, tenant, mallory_tenant, allocation):
    page = staff.get("/manage/?q=fold").content.decode()

    assert "Protein folding" in page
    assert "Heist" not in page
    org_page = staff.get(f"/manage/organizations/{tenant.org.uuid}/")
    assert org_page.status_code == HTTPStatus.OK
    assert f"/manage/allocations/{allocation.uuid}/" in org_page.content.decode()


def test_staff_see_balance_and_burn_rate(staff, allocation, tenant, cluster):
    for key, actual in (("now", 70), ("earlier", 30)):
        hold = ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=80, key=key)
        ledger_settle(actor=None, hold=hold, actual=Decimal(actual))
    LedgerEntry.objects.filter(idempotency_key="earlier:charge").update(
        created_at=timezone.now() - timedelta(days=20)
    )

    response = staff.get(f"/manage/projects/{tenant.project.uuid}/")

    [row] = response.context["rows"]
    assert row["allocation"].available == Decimal(900)
    assert (row["burn"].last_7_days, row["burn"].last_30_days) == (Decimal(70), Decimal(100))
    assert row["burn"].per_day == Decimal(10)
    assert row["days_left"] == 90
    assert "runs out in ~90 d" in response.content.decode()


def test_staff_credit_and_debit_with_a_memo_once_per_form(staff, dave, allocation):
    url = f"/manage/allocations/{allocation.uuid}/adjust/"

    staff.post(url, {"amount": "250", "memo": "Conference deadline", "key": "form-1"})
    staff.post(url, {"amount": "250", "memo": "Conference deadline", "key": "form-1"})
    staff.post(url, {"amount": "-50", "memo": "Correction", "key": "form-2"})
    response = staff.post(
        url, {"amount": "-5000", "memo": "Too much", "key": "form-3"}, follow=True
    )

    assert "Cannot debit 5000" in response.content.decode()
    allocation.refresh_from_db()
    assert allocation.credited == Decimal(1200)
    entries = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).order_by("id")
    assert [(e.amount, e.memo, e.actor) for e in entries] == [
        (Decimal(250), "Conference deadline", dave),
        (Decimal(-50), "Correction", dave),
    ]


def test_a_memo_is_required_to_adjust(staff, allocation):
    staff.post(f"/manage/allocations/{allocation.uuid}/adjust/", {"amount": "5", "key": "k"})

    allocation.refresh_from_db()
    assert allocation.credited == Decimal(1000)


def test_staff_extend_suspend_and_resume(staff, dave, allocation, tenant, cluster):
    base = f"/manage/allocations/{allocation.uuid}/"
    new_end = (allocation.ends_at + timedelta(days=60)).date()

    staff.post(f"{base}extend/", {"ends_on": str(new_end)})
    staff.post(f"{base}suspend/", {"reason": "Security incident"})
    allocation.refresh_from_db()
    assert allocation.ends_at.date() == new_end + timedelta(days=1)
    assert (allocation.status, allocation.status_reason) == ("suspended", "Security incident")

    staff.post(f"{base}resume/")
    allocation.refresh_from_db()
    assert (allocation.status, allocation.status_reason) == ("active", "")
    users = {r.history_user for r in allocation.history.all()[:3]}
    assert users == {dave}
    page = staff.get(base).content.decode()
    assert "Security incident" in page  # in the history table


def test_staff_create_a_trial_allocation(staff, tenant, cluster):
    today = timezone.now().date()
    response = staff.post(
        f"/manage/projects/{tenant.project.uuid}/",
        {
            "kind": "trial",
            "amount": "100",
            "clusters": [str(cluster.pk)],
            "starts_on": str(today),
            "ends_on": str(today + timedelta(days=30)),
            "memo": "Welcome",
            "key": "trial-1",
        },
    )

    assert response.status_code == HTTPStatus.FOUND
    allocation = Allocation.objects.get(kind="trial")
    assert allocation.credited == Decimal(100)


def test_the_usage_report_groups_by_month_org_project_and_cluster_with_csv(
    staff, allocation, tenant, cluster
):
    other = factories.ClusterFactory(name="other")
    allocation.clusters.add(other)
    for key, where, actual in (("a", cluster, 10), ("b", cluster, 5), ("c", other, 7)):
        hold = ledger_hold(actor=None, project=tenant.project, cluster=where, amount=20, key=key)
        ledger_settle(actor=None, hold=hold, actual=Decimal(actual))
    last_month = timezone.now().replace(day=1) - timedelta(days=3)
    LedgerEntry.objects.filter(idempotency_key="c:charge").update(created_at=last_month)

    page = staff.get("/manage/usage/")
    csv_response = staff.get("/manage/usage/?format=csv")

    assert page.status_code == HTTPStatus.OK
    rows = list(csv.reader(io.StringIO(csv_response.content.decode())))
    assert rows[0] == [
        "month",
        "organization",
        "project",
        "cluster",
        "charged_su",
        "refunded_su",
        "net_su",
    ]
    this_month = timezone.now().strftime("%Y-%m")
    assert rows[1:] == [
        [this_month, "Vision Lab", "Protein folding", "sim", "15.0000", "0.0000", "15.0000"],
        [
            last_month.strftime("%Y-%m"),
            "Vision Lab",
            "Protein folding",
            "other",
            "7.0000",
            "0.0000",
            "7.0000",
        ],
    ]
    filtered = staff.get(f"/manage/usage/?format=csv&cluster={other.uuid}").content.decode()
    assert "sim" not in filtered and "other" in filtered


def test_usage_csv_neutralises_formulas_in_names(staff, allocation, tenant, cluster):
    tenant.project.name = "=HYPERLINK(1)"
    tenant.project.save()
    hold = ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=1, key="x")
    ledger_settle(actor=None, hold=hold, actual=Decimal(1))

    body = staff.get("/manage/usage/?format=csv").content.decode()

    assert "'=HYPERLINK(1)" in body


def test_staff_schedule_rates_and_see_their_history(staff, dave, cluster):
    later = (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    response = staff.post(
        "/manage/clusters/",
        {
            "cluster": str(cluster.uuid),
            "resource": "gpu_hour",
            "gpu_type": "h100",
            "su_per_unit": "2.5",
            "effective_from": later,
        },
    )
    assert response.status_code == HTTPStatus.FOUND
    assert cluster.rates.filter(su_per_unit=Decimal("2.5")).exists()

    backdated = staff.post(
        "/manage/clusters/",
        {
            "cluster": str(cluster.uuid),
            "resource": "cpu_hour",
            "su_per_unit": "9",
            "effective_from": "2020-01-01T00:00",
        },
        follow=True,
    )
    assert "cannot take effect in the past" in backdated.content.decode()
    assert not cluster.rates.filter(su_per_unit=9).exists()
    history = staff.get(f"/manage/clusters/{cluster.uuid}/history/").content.decode()
    assert "dave" in history


def test_the_django_admin_lists_every_quotas_model_and_keeps_the_ledger_read_only(
    web, allocation, tenant, cluster
):
    admin_user = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client = web(admin_user)
    hold = ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=1, key="x")
    for model in (
        "cluster",
        "rate",
        "allocation",
        "allocationrequest",
        "allocationrequestevent",
        "hold",
        "ledgerentry",
    ):
        assert client.get(f"/django-admin/quotas/{model}/").status_code == HTTPStatus.OK, model
    entry = LedgerEntry.objects.first()
    assert client.get(f"/django-admin/quotas/ledgerentry/{entry.pk}/change/").status_code == 200
    assert client.get("/django-admin/quotas/ledgerentry/add/").status_code == 403
    response = client.post(f"/django-admin/quotas/hold/{hold.pk}/delete/", {"post": "yes"})
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert (
        client.get(f"/django-admin/quotas/allocation/{allocation.pk}/history/").status_code == 200
    )
    # Rates too: only rate_create schedules one (never backdated; it clears the rate cache).
    rate = cluster.rates.first()
    assert client.get("/django-admin/quotas/rate/add/").status_code == HTTPStatus.FORBIDDEN
    response = client.post(
        f"/django-admin/quotas/rate/{rate.pk}/change/",
        {"su_per_unit": "0", "resource": rate.resource, "effective_from": "2000-01-01"},
    )
    assert response.status_code == HTTPStatus.FORBIDDEN
    response = client.post(f"/django-admin/quotas/rate/{rate.pk}/delete/", {"post": "yes"})
    assert response.status_code == HTTPStatus.FORBIDDEN
    rate.refresh_from_db()
    assert rate.su_per_unit != 0


def test_the_usage_reports_until_date_is_inclusive(staff, allocation, tenant, cluster):
    hold = ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=20, key="t")
    ledger_settle(actor=None, hold=hold, actual=Decimal("0.0042"))
    today = timezone.now().date()

    through_today = staff.get(f"/manage/usage/?format=csv&until={today}").content.decode()
    before_today = staff.get(
        f"/manage/usage/?format=csv&until={today - timedelta(days=1)}"
    ).content.decode()
    page = staff.get(f"/manage/usage/?until={today}").content.decode()

    assert "0.0042" in through_today  # the ledger's precision, not 0.00
    assert "0.0042" not in before_today
    assert "Until (inclusive)" in page and "0.0042" in page
