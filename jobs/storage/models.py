"""A project's storage settings (its byte quota, set by staff) and the bytes its folder on each
cluster holds (kept by the portal as it writes and deletes, recounted from disk)."""

from __future__ import annotations

from django.db import models

from accounts.models import Project
from quotas.models import Cluster


class ProjectStorage(models.Model):
    """The byte quota of a project's folder on each cluster (each folder is held to it);
    a project without a row has settings.GPUC_STORAGE_DEFAULT_QUOTA_BYTES."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="storage")
    quota_bytes = models.BigIntegerField(
        help_text="Bytes the project may keep in its folder on each cluster (0: none)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "jobs"
        verbose_name = "project storage quota"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(quota_bytes__gte=0), name="project_storage_quota_not_negative"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.quota_bytes} bytes"


class ProjectStorageUsage(models.Model):
    """Bytes of regular files in a project's folder on one cluster. The portal changes it in the
    transaction that writes or deletes a file (under this row's lock, which also orders the
    quota checks); a recount from disk (storage_recount, hourly) takes in what jobs wrote.
    `changes` counts the portal's writes, so that a recount racing one is not saved over it."""

    project = models.ForeignKey(  # (indexed by the unique constraint, which leads with it)
        Project, on_delete=models.CASCADE, related_name="storage_usage", db_index=False
    )
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="storage_usage")
    used_bytes = models.BigIntegerField(default=0)
    changes = models.BigIntegerField(default=0)
    counted_at = models.DateTimeField(help_text="When the folder was last measured on disk.")

    class Meta:
        app_label = "jobs"
        verbose_name = "project storage usage"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "cluster"], name="project_storage_usage_one_per_cluster"
            ),
            models.CheckConstraint(
                condition=models.Q(used_bytes__gte=0), name="project_storage_usage_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} on {self.cluster}: {self.used_bytes} bytes"
