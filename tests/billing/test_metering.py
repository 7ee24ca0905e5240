from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from portal.celery import app as celery_app
from quotas.billing.models import BillingAccount, MeterReport, MeterReportEntry
from quotas.billing.services import meter_reports_build, meter_reports_send
from quotas.billing.services.metering import hour_of, meter_identifier
from quotas.billing.tasks import meter_events_report_task
from quotas.models import LedgerEntry
from tests import factories
from tests.billing.helpers import open_postpaid, spend


def _drift(capsys) -> tuple[int, str]:
    try:
        call_command("billing_drift")
    except SystemExit as exc:
        return int(exc.code), capsys.readouterr().out
    return 0, capsys.readouterr().out


def test_opting_in_creates_a_postpaid_allocation_credited_with_the_limit(
    plan, tenant, cluster, customer, stripe_on
):
    allocation = plan.allocation
    assert (allocation.kind, allocation.project, allocation.credited) == (
        "postpaid",
        tenant.project,
        Decimal("1000"),
    )
    assert list(allocation.clusters.all()) == [cluster]
    assert stripe_on.customers[customer]["metadata"]["organization"] == str(tenant.org.uuid)


def test_charges_of_a_closed_hour_are_reported_as_one_meter_event_per_customer(
    plan, tenant, cluster, customer, stripe_on
):
    for n, amount in enumerate(["1.2345", "10", "0.0001"]):
        spend(tenant.project, cluster, amount, key=f"job-{n}")
    charged_at = LedgerEntry.objects.filter(kind="charge").first().created_at

    assert meter_reports_build() == []  # the hour is still open
    [report] = meter_reports_build(now=timezone.now() + timedelta(hours=1))
    result = meter_reports_send(now=timezone.now() + timedelta(hours=1))

    assert (result.sent, result.retrying, result.failed) == (1, 0, 0)
    report.refresh_from_db()
    assert (report.status, report.value, report.version) == ("sent", Decimal("11.2346"), 1)
    assert report.identifier == meter_identifier(customer, hour_of(charged_at), 1)
    [event] = stripe_on.meter_events.values()
    assert event["event_name"] == settings.STRIPE_METER_EVENT_NAME
    assert event["identifier"] == report.identifier
    assert event["payload"] == {"stripe_customer_id": customer, "value": "112346"}
    assert event["timestamp"] == int(hour_of(charged_at).timestamp())
    assert MeterReportEntry.objects.filter(report=report).count() == 3


def test_a_stripe_failure_is_retried_later_with_the_same_identifier_until_no_drift_remains(
    plan, tenant, cluster, customer, stripe_on, capsys
):
    spend(tenant.project, cluster, "42.5", key="job-1")
    later = timezone.now() + timedelta(hours=1)
    meter_reports_build(now=later)
    stripe_on.fail_next_meter_events(1)

    first = meter_reports_send(now=later)

    assert (first.sent, first.retrying) == (0, 1)
    report = MeterReport.objects.get()
    assert (report.status, report.attempts) == ("pending", 1)
    assert report.next_attempt_at > later
    assert stripe_on.meter_events == {}
    code, out = _drift(capsys)
    assert code == 1
    assert "DRIFT" in out
    assert "42.5000" in out

    assert meter_reports_send(now=later).sent == 0  # not due yet: no call at all
    assert len(stripe_on.requests_to("POST", "/v1/billing/meter_events")) == 1
    retry = meter_reports_send(now=report.next_attempt_at)

    assert retry.sent == 1
    report.refresh_from_db()
    assert (report.status, report.attempts) == ("sent", 2)
    calls = stripe_on.requests_to("POST", "/v1/billing/meter_events")
    assert [c.params["identifier"] for c in calls] == [report.identifier] * 2
    assert stripe_on.meter_total(customer) == 425000
    code, out = _drift(capsys)
    assert code == 0
    assert "OK: 1 customer(s), no drift" in out


def test_a_lost_response_is_not_billed_twice(plan, tenant, cluster, customer, stripe_on, capsys):
    spend(tenant.project, cluster, "7", key="job-1")
    later = timezone.now() + timedelta(hours=1)
    meter_reports_build(now=later)
    stripe_on.fail_next_meter_events(1, after_store=True)  # Stripe kept it, we saw a 500

    assert meter_reports_send(now=later).retrying == 1
    assert meter_reports_send(now=later + timedelta(hours=1)).sent == 1

    assert len(stripe_on.meter_events) == 1
    assert stripe_on.meter_total(customer) == 70000
    assert MeterReport.objects.get().status == "sent"
    assert _drift(capsys)[0] == 0


def test_charges_committed_after_their_hour_was_reported_make_a_new_version(
    plan, tenant, cluster, customer, stripe_on, capsys
):
    later = timezone.now() + timedelta(hours=1)
    spend(tenant.project, cluster, "3", key="job-1")
    [v1] = meter_reports_build(now=later)
    meter_reports_send(now=later)
    spend(tenant.project, cluster, "4", key="job-2")  # same hour, committed late

    [v2] = meter_reports_build(now=later)
    meter_reports_send(now=later)

    assert (v1.hour, v1.version, v1.value) == (v2.hour, 1, Decimal("3"))
    assert (v2.version, v2.value) == (2, Decimal("4"))
    assert v1.identifier != v2.identifier
    assert stripe_on.meter_total(customer) == 70000
    assert meter_reports_build(now=later) == []  # nothing is ever reported twice
    assert _drift(capsys)[0] == 0


def test_a_permanent_refusal_is_not_retried_and_shows_as_drift(
    plan, tenant, cluster, customer, stripe_on, capsys
):
    spend(tenant.project, cluster, "5", key="job-1")
    later = timezone.now() + timedelta(hours=1)
    meter_reports_build(now=later)
    del stripe_on.customers[customer]  # Stripe no longer knows the customer

    result = meter_reports_send(now=later + timedelta(days=1))

    assert result.failed == 1
    report = MeterReport.objects.get()
    assert report.status == "failed"
    assert "No customer" in report.last_error
    assert meter_reports_send(now=later + timedelta(days=2)).failed == 0
    assert _drift(capsys)[0] == 1


def test_charges_on_prepaid_allocations_are_not_reported(
    tenant, cluster, allocation, stripe_on, capsys
):
    spend(tenant.project, cluster, "9", key="job-1")

    assert meter_reports_build(now=timezone.now() + timedelta(hours=2)) == []
    assert stripe_on.requests_to("POST", "/v1/billing/meter_events") == []
    code, out = _drift(capsys)
    assert (code, "OK: 0 customer(s), no drift" in out) == (0, True)


def test_the_beat_task_named_in_settings_builds_and_sends(
    plan, tenant, cluster, customer, stripe_on
):
    entry = settings.CELERY_BEAT_SCHEDULE["billing-report-meter-events"]
    task = celery_app.tasks[entry["task"]]
    assert (
        task.name
        == meter_events_report_task.name
        == "quotas.billing.tasks.meter_events_report_task"
    )
    spend(tenant.project, cluster, "2", key="job-1")
    LedgerEntry.objects.filter(kind="charge").update(created_at=timezone.now() - timedelta(hours=2))

    result = task.apply().get()

    assert result == {"built": 1, "sent": 1, "retrying": 0, "failed": 0}
    assert stripe_on.meter_total(customer) == 20000


def test_reports_of_two_customers_never_mix(plan, tenant, cluster, stripe_on, mallory_tenant):
    open_postpaid(mallory_tenant.org, mallory_tenant.project, limit="50")
    spend(tenant.project, cluster, "1", key="job-a")
    spend(mallory_tenant.project, cluster, "2", key="job-m")

    reports = meter_reports_build(now=timezone.now() + timedelta(hours=1))
    meter_reports_send(now=timezone.now() + timedelta(hours=1))

    assert sorted((r.account.organization.slug, r.value) for r in reports) == [
        ("evil", Decimal("2")),
        ("vision-lab", Decimal("1")),
    ]
    assert len({r.identifier for r in reports}) == 2
    assert sorted(stripe_on.meter_total(r.stripe_customer_id) for r in reports) == [10000, 20000]


def test_only_facility_admins_open_postpaid_plans(tenant, cluster, stripe_on, alice):
    from quotas.billing.services import postpaid_plan_open
    from quotas.exceptions import NotFacilityAdmin

    with pytest.raises(NotFacilityAdmin):
        postpaid_plan_open(
            actor=alice, organization=tenant.org, project=tenant.project, credit_limit=Decimal(1)
        )
    assert stripe_on.requests == []


def test_reopening_a_plan_with_a_new_limit_moves_the_credit(plan, tenant, cluster, stripe_on):
    spend(tenant.project, cluster, "100", key="job-1")

    open_postpaid(tenant.org, tenant.project, limit="300")

    plan.refresh_from_db()
    plan.allocation.refresh_from_db()
    assert plan.credit_limit == Decimal("300")
    assert (plan.allocation.credited, plan.allocation.available) == (
        Decimal("400"),
        Decimal("300"),
    )
    assert len(stripe_on.requests_to("POST", "/v1/customers")) == 1


def test_the_postpaid_command_opens_and_closes_a_plan(tenant, cluster, stripe_on):
    factories.UserFactory(username="root", is_staff=True)

    call_command(
        "billing_postpaid", "open", "--org", "vision-lab", "--project", "folding",
        "--limit", "250", "--as", "root",
    )  # fmt: skip
    call_command("billing_postpaid", "close", "--org", "vision-lab", "--as", "root")

    account = BillingAccount.objects.get(organization=tenant.org)
    plan = tenant.org.postpaid_plan
    plan.allocation.refresh_from_db()
    assert account.stripe_customer_id
    assert (plan.active, plan.allocation.credited, plan.allocation.available) == (
        False,
        Decimal("0"),
        Decimal("0"),
    )
