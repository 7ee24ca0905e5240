"""`manage.py reconcile_ledger`: exit 0 and one OK line, or exit 1 and the report."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from quotas.reconcile import reconcile_ledger


class Command(BaseCommand):
    help = (
        "Prove the ledger: allocation counters equal their ledger sums, holds match their "
        "entries, and no hold is orphaned. Exit status 1 and a report when something is off."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stale-days",
            type=int,
            default=None,
            help="With no hold owner check registered, report open holds older than this "
            "(default: settings.QUOTAS_STALE_HOLD_DAYS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = reconcile_ledger(stale_hold_days=options["stale_days"])
        if report.ok:
            self.stdout.write(report.summary())
            return
        self.stdout.write(report.format())
        sys.exit(1)
