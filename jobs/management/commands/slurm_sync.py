"""`manage.py slurm_sync [--cluster NAME] [--dry-run]`: push every wanted project account,
association and limit (repair), or print the drift between the portal and the scheduler."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import services
from quotas.models import Cluster


class Command(BaseCommand):
    help = (
        "Push all project accounts, member associations and limits the portal wants to the "
        "clusters that manage them (like the staff page's repair button). --dry-run prints "
        "the drift instead and changes nothing. Exit status 1 if anything is refused/drifted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cluster", help="Only this cluster (its portal name).")
        parser.add_argument("--dry-run", action="store_true", help="Print the drift; push nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        clusters = Cluster.objects.order_by("name")
        if options["cluster"]:
            clusters = clusters.filter(name=options["cluster"])
            if not clusters.exists():
                raise CommandError(f"No cluster named {options['cluster']!r}.")
        managed = [c for c in clusters if services.accounts_managed(c)]
        if options["cluster"] and not managed:
            raise CommandError(
                f"Cluster {options['cluster']} does not let the portal manage accounts "
                "(set manage_accounts in its options)."
            )
        bad = 0
        for cluster in managed:
            if options["dry_run"]:
                drift = services.accounts_drift(cluster=cluster)
                drifted = [d for d in drift if d.drifted]
                self.stdout.write(f"{cluster.name}: {len(drift)} accounts, {len(drifted)} drifted")
                for d in drifted:
                    if d.held_users is None:
                        self.stdout.write(f"  {d.name} ({d.project}): missing on the scheduler")
                        continue
                    self.stdout.write(
                        f"  {d.name} ({d.project}): wants {d.wanted_limits} "
                        f"users={','.join(d.wanted_users)}; holds {d.held_limits} "
                        f"users={','.join(d.held_users)}"
                    )
                bad += len(drifted)
            else:
                tick = services.accounts_sync(cluster=cluster, force=True)
                self.stdout.write(
                    f"{cluster.name}: created {tick.created}, pushed {tick.pushed}, "
                    f"refused {len(tick.refused)}"
                )
                for name, message in sorted(tick.refused.items()):
                    self.stdout.write(f"  {name}: {message}")
                bad += len(tick.refused)
        if bad:
            sys.exit(1)
