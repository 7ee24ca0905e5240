"""`manage.py billing_sync_invoices`: re-read invoices from Stripe (after missed webhooks)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organization
from portal.errors import DomainError
from quotas.billing.models import BillingAccount
from quotas.billing.services import invoices_sync


class Command(BaseCommand):
    help = "Fetch the invoices of every Stripe customer (or of --org) and update our copies."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Organization slug (default: every customer)")

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = BillingAccount.objects.filter(stripe_customer_id__isnull=False)
        if options["org"]:
            if not Organization.objects.filter(slug=options["org"]).exists():
                raise CommandError(f"No organization '{options['org']}'")
            accounts = accounts.filter(organization__slug=options["org"])
        for account in accounts.select_related("organization"):
            try:
                rows = invoices_sync(organization=account.organization)
            except DomainError as exc:
                raise CommandError(exc.detail) from exc
            self.stdout.write(f"{account.organization.slug}: {len(rows)} invoice(s)")
