"""Post-paid usage reported to Stripe as Billing Meter events, exactly once.

Build: every `charge` on a post-paid allocation, once its hour has closed, is attached to one
MeterReport of (customer, hour, version) through MeterReportEntry, whose unique ledger entry
makes double counting impossible; charges that commit after an hour was reported make the
next version. Send: each pending report becomes one meter event whose identifier is a hash
of (customer, hour, version), so a retry (ours, or after a lost response) can only be
accepted once; Stripe answering "already exists" means it was delivered.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, QuerySet, Sum
from django.utils import timezone

from accounts.models import Organization
from quotas.billing.models import BillingAccount, MeterReport, MeterReportEntry
from quotas.billing.stripe_api import (
    billing_enabled,
    is_duplicate_identifier,
    is_transient,
    stripe_client,
)
from quotas.models import ZERO, Allocation, LedgerEntry

logger = logging.getLogger(__name__)

# Stripe accepts meter events up to 35 days old; older hours are sent as of 34 days ago.
MAX_EVENT_AGE = timedelta(days=34)
RETRY_BASE = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def meter_identifier(customer_id: str, hour: datetime, version: int) -> str:
    """Deterministic: the same (customer, hour, version) always gives the same identifier."""
    raw = f"{customer_id}|{hour_of(hour):%Y-%m-%dT%H}|{version}"
    return "gpuc-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def _postpaid_charges(organization_id: int) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(
        kind=LedgerEntry.Kind.CHARGE,
        allocation__kind=Allocation.Kind.POSTPAID,
        allocation__project__organization_id=organization_id,
    )


def meter_reports_build(*, now: datetime | None = None) -> list[MeterReport]:
    """Group the unreported post-paid charges of closed hours into new pending reports."""
    cutoff = hour_of(now or timezone.now())
    accounts = BillingAccount.objects.filter(
        stripe_customer_id__isnull=False,
        organization__projects__allocations__kind=Allocation.Kind.POSTPAID,
    ).distinct()
    made: list[MeterReport] = []
    for account_id in accounts.values_list("pk", flat=True):
        made += _build_for_account(account_id, cutoff)
    return made


@transaction.atomic
def _build_for_account(account_id: int, cutoff: datetime) -> list[MeterReport]:
    # The account lock makes builders of one customer take turns (versions stay dense).
    account = BillingAccount.objects.select_for_update().get(pk=account_id)
    if not account.stripe_customer_id:
        return []
    unreported = (
        _postpaid_charges(account.organization_id)
        .filter(created_at__lt=cutoff)
        .filter(~Exists(MeterReportEntry.objects.filter(ledger_entry=OuterRef("pk"))))
        .values_list("pk", "created_at", "amount")
    )
    buckets: dict[datetime, list[tuple[int, Decimal]]] = defaultdict(list)
    for pk, created_at, amount in unreported.iterator(chunk_size=5000):
        buckets[hour_of(created_at)].append((pk, amount))
    made = []
    for hour in sorted(buckets):
        rows = buckets[hour]
        last = MeterReport.objects.filter(account=account, hour=hour).aggregate(v=Max("version"))
        version = (last["v"] or 0) + 1
        report = MeterReport.objects.create(
            account=account,
            stripe_customer_id=account.stripe_customer_id,
            hour=hour,
            version=version,
            value=sum((amount for _, amount in rows), ZERO),
            identifier=meter_identifier(account.stripe_customer_id, hour, version),
        )
        MeterReportEntry.objects.bulk_create(
            [MeterReportEntry(report=report, ledger_entry_id=pk) for pk, _ in rows],
            batch_size=5000,
        )
        made.append(report)
    return made


@dataclass(frozen=True)
class SendResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def _backoff(attempts: int) -> timedelta:
    # 2 ** (attempts - 1) as a shift: an int, where a power of an int may be a float to mypy.
    return min(RETRY_BASE * (1 << max(attempts - 1, 0)), RETRY_MAX)


def meter_reports_send(*, now: datetime | None = None, limit: int = 1000) -> SendResult:
    """Send the pending reports that are due, one meter event each (never in a transaction).

    Transient failures (network, 5xx, 429) are retried later with the same identifier;
    a permanent refusal marks the report failed (it shows as drift until handled).
    """
    if not billing_enabled():
        return SendResult()
    now = now or timezone.now()
    client = stripe_client()
    sent = retrying = failed = 0
    due = MeterReport.objects.filter(
        status=MeterReport.Status.PENDING, next_attempt_at__lte=now
    ).order_by("hour", "version", "pk")[:limit]
    for report in list(due):
        pending = MeterReport.objects.filter(pk=report.pk, status=MeterReport.Status.PENDING)
        timestamp = max(report.hour, now - MAX_EVENT_AGE)
        try:
            client.v1.billing.meter_events.create(
                params={
                    "event_name": settings.STRIPE_METER_EVENT_NAME,
                    "identifier": report.identifier,
                    "timestamp": int(timestamp.timestamp()),
                    "payload": {
                        "stripe_customer_id": report.stripe_customer_id,
                        "value": str(report.meter_value),
                    },
                }
            )
        except stripe.StripeError as exc:
            if is_duplicate_identifier(exc):
                pending.update(status=MeterReport.Status.SENT, sent_at=now, last_error="")
                sent += 1
            elif is_transient(exc):
                attempts = report.attempts + 1
                pending.update(
                    attempts=attempts,
                    next_attempt_at=now + _backoff(attempts),
                    last_error=str(exc)[:2000],
                )
                retrying += 1
                logger.warning("Meter report %s will be retried: %s", report.identifier, exc)
            else:
                pending.update(
                    status=MeterReport.Status.FAILED,
                    attempts=report.attempts + 1,
                    last_error=str(exc)[:2000],
                )
                failed += 1
                logger.error("Stripe refused meter report %s: %s", report.identifier, exc)
        else:
            pending.update(
                status=MeterReport.Status.SENT,
                attempts=report.attempts + 1,
                sent_at=now,
                last_error="",
            )
            sent += 1
    return SendResult(sent=sent, retrying=retrying, failed=failed)


@dataclass(frozen=True)
class DriftLine:
    organization: Organization
    stripe_customer_id: str
    ledger: Decimal  # every post-paid charge in the ledger
    reported: Decimal  # accepted by Stripe
    pending: Decimal  # in reports not (yet) accepted
    unreported: Decimal  # in no report yet (open hour, or the task has not run)

    @property
    def difference(self) -> Decimal:
        return self.ledger - self.reported


def meter_drift() -> list[DriftLine]:
    """Ledger totals vs what Stripe accepted, per organization with post-paid charges."""
    org_ids = set(
        Allocation.objects.filter(kind=Allocation.Kind.POSTPAID).values_list(
            "project__organization_id", flat=True
        )
    ) | set(MeterReport.objects.values_list("account__organization_id", flat=True))
    lines = []
    for org in Organization.objects.filter(pk__in=org_ids).order_by("name"):
        account = BillingAccount.objects.filter(organization=org).first()
        ledger = _postpaid_charges(org.pk).aggregate(t=Sum("amount"))["t"] or ZERO
        reports = MeterReport.objects.filter(account__organization=org)
        reported = (
            reports.filter(status=MeterReport.Status.SENT).aggregate(t=Sum("value"))["t"] or ZERO
        )
        pending = (
            reports.exclude(status=MeterReport.Status.SENT).aggregate(t=Sum("value"))["t"] or ZERO
        )
        in_reports = (
            MeterReportEntry.objects.filter(report__account__organization=org).aggregate(
                t=Sum("ledger_entry__amount")
            )["t"]
            or ZERO
        )
        lines.append(
            DriftLine(
                organization=org,
                stripe_customer_id=(account.stripe_customer_id or "") if account else "",
                ledger=ledger,
                reported=reported,
                pending=pending,
                unreported=ledger - in_reports,
            )
        )
    return lines


def meter_reports_retry(*, report_ids: list[int], now: datetime | None = None) -> int:
    """Queue reports Stripe refused for another send (same identifier); returns how many."""
    return MeterReport.objects.filter(pk__in=report_ids, status=MeterReport.Status.FAILED).update(
        status=MeterReport.Status.PENDING, next_attempt_at=now or timezone.now()
    )
