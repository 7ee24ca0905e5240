"""`manage.py billing_postpaid open|close`: facility admins opt organizations in and out."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organization, Project, User
from portal.errors import DomainError
from quotas.billing.models import PostpaidPlan
from quotas.billing.services import postpaid_plan_close, postpaid_plan_open


class Command(BaseCommand):
    help = (
        "Open (or change the limit of) a post-paid plan: --org SLUG --project SLUG --limit SU "
        "--as USERNAME; or close it: close --org SLUG --as USERNAME."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["open", "close"])
        parser.add_argument("--org", required=True)
        parser.add_argument("--project")
        parser.add_argument("--limit", type=Decimal)
        parser.add_argument("--as", dest="actor", required=True, help="A facility admin")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = User.objects.filter(username=options["actor"]).first()
        org = Organization.objects.filter(slug=options["org"]).first()
        if actor is None or org is None:
            raise CommandError("Unknown --as user or --org organization")
        try:
            if options["action"] == "open":
                project = Project.objects.filter(
                    organization=org, slug=options["project"] or ""
                ).first()
                if project is None or options["limit"] is None:
                    raise CommandError("open needs --project (a slug of the org) and --limit")
                plan = postpaid_plan_open(
                    actor=actor, organization=org, project=project, credit_limit=options["limit"]
                )
                self.stdout.write(f"Post-paid plan of {org.slug}: {plan.credit_limit} SU")
            else:
                found = PostpaidPlan.objects.filter(organization=org).first()
                if found is None:
                    raise CommandError(f"{org.slug} has no post-paid plan")
                postpaid_plan_close(actor=actor, plan=found)
                self.stdout.write(f"Post-paid plan of {org.slug} closed")
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
