"""The bytes a project's folder holds, kept in a row (ProjectStorageUsage) rather than walked on
every upload: a folder is walked once when the portal first uses it, then the row is changed
by the portal's own writes and deletes (under the row's lock, in their transaction) and
recounted from disk by storage_recount (hourly, and `manage.py storage_recount`) to take in
what jobs on the cluster wrote or removed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from jobs.storage import fs
from jobs.storage.models import ProjectStorageUsage

if TYPE_CHECKING:
    from jobs.storage.services import Folder

RECOUNT_ATTEMPTS = 3


def _row(folder: Folder) -> ProjectStorageUsage:
    """The folder's usage row; made on first use from a walk of the folder (outside any lock)."""
    where = {"project": folder.project, "cluster": folder.cluster}
    row = ProjectStorageUsage.objects.filter(**where).first()
    if row is not None:
        return row
    counted = fs.usage(folder.root)
    row, _ = ProjectStorageUsage.objects.get_or_create(
        **where, defaults={"used_bytes": counted, "counted_at": timezone.now()}
    )
    return row


def usage_row(*, folder: Folder) -> ProjectStorageUsage:
    """The folder's usage as last kept (no walk, but the first time)."""
    return _row(folder)


@contextmanager
def usage_locked(*, folder: Folder) -> Iterator[ProjectStorageUsage]:
    """A transaction holding the folder's usage row locked: the portal's writes and deletes in
    one folder (and their quota checks) take turns, and a recount sees each as a change."""
    pk = _row(folder).pk
    with transaction.atomic():
        yield ProjectStorageUsage.objects.select_for_update().get(pk=pk)


def usage_change(*, row: ProjectStorageUsage, delta: int) -> None:
    """Add `delta` bytes (negative: freed) to a locked row; never below 0 (a job may have
    removed what the portal counted)."""
    ProjectStorageUsage.objects.filter(pk=row.pk).update(
        used_bytes=Greatest(F("used_bytes") + delta, 0), changes=F("changes") + 1
    )


def storage_recount(*, folder: Folder) -> ProjectStorageUsage:
    """Walk the folder and keep what it holds. The walk takes no lock; when the portal wrote or
    deleted in the folder meanwhile it walks again (a few times, then leaves the row as is)."""
    row = _row(folder)
    for _ in range(RECOUNT_ATTEMPTS):
        seen = row.changes
        counted = fs.usage(folder.root)
        with transaction.atomic():
            row = ProjectStorageUsage.objects.select_for_update().get(pk=row.pk)
            if row.changes == seen:
                row.used_bytes = counted
                row.counted_at = timezone.now()
                row.save(update_fields=["used_bytes", "counted_at"])
                return row
    return row
