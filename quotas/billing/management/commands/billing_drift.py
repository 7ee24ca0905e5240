"""`manage.py billing_drift`: post-paid ledger totals vs what Stripe accepted, per customer."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from quotas.billing.services import meter_drift


class Command(BaseCommand):
    help = (
        "Compare, per post-paid customer, the SU charged in the ledger with the SU Stripe "
        "accepted as meter events. Exit status 1 when any customer differs."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        lines = meter_drift()
        header = (
            f"{'organization':<30} {'customer':<24} {'ledger':>14} {'reported':>14} "
            f"{'pending':>12} {'unreported':>12} {'difference':>12}"
        )
        self.stdout.write(header)
        for line in lines:
            self.stdout.write(
                f"{line.organization.slug[:30]:<30} {line.stripe_customer_id or '-':<24} "
                f"{line.ledger:>14} {line.reported:>14} {line.pending:>12} "
                f"{line.unreported:>12} {line.difference:>12}"
            )
        drifting = [line for line in lines if line.difference != 0]
        if drifting:
            self.stdout.write(
                f"DRIFT: {len(drifting)} of {len(lines)} customer(s) differ "
                "(pending reports are sent by meter_events_report_task)"
            )
            sys.exit(1)
        self.stdout.write(f"OK: {len(lines)} customer(s), no drift")
