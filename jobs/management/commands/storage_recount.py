"""`manage.py storage_recount [--project UUID] [--cluster NAME]`: measure project folders on
disk and keep what they hold as their usage (files jobs wrote or removed count from then on)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.storage import services
from jobs.storage.models import ProjectStorageUsage


class Command(BaseCommand):
    help = (
        "Recount the bytes in project storage folders from disk (as the hourly task does): "
        "every folder the portal has used, or those of one project or cluster."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", help="Only this project (its uuid).")
        parser.add_argument("--cluster", help="Only this cluster (its portal name).")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = ProjectStorageUsage.objects.select_related("project", "cluster").order_by("pk")
        if options["project"]:
            try:
                rows = rows.filter(project__uuid=uuid.UUID(options["project"]))
            except ValueError:
                raise CommandError(f"--project {options['project']!r} is not a uuid") from None
        if options["cluster"]:
            rows = rows.filter(cluster__name=options["cluster"])
        for row in rows:
            counted = services.storage_recount_usage(usage_id=row.pk)
            shown = "no project folders on this cluster" if counted is None else f"{counted} bytes"
            self.stdout.write(
                f"{row.project} on {row.cluster.name}: {shown} (was {row.used_bytes} bytes)"
            )
