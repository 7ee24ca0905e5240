"""Celery tasks for quotas: thin wrappers over one service each."""

from __future__ import annotations

from celery import shared_task
from django.core.mail import mail_admins

from quotas.reconcile import reconcile_ledger
from quotas.services import allocations_expire


@shared_task(acks_late=True)
def allocations_expire_task() -> dict[str, str | int]:
    """Daily: expire allocations past their end and send the 30/7-day reminders (idempotent)."""
    result = allocations_expire()
    return {
        "expired": result.expired,
        "expired_su": str(result.expired_su),
        "reminded": result.reminded,
    }


@shared_task(acks_late=True)
def reconcile_ledger_task() -> str:
    """Nightly: prove the ledger; email ADMINS the report when anything is off."""
    report = reconcile_ledger()
    if not report.ok:
        mail_admins(f"Ledger reconciliation: {len(report.problems)} problem(s)", report.format())
    return report.summary()
