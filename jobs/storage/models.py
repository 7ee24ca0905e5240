"""A project's storage settings: its byte quota (set by staff)."""

from __future__ import annotations

from django.db import models

from accounts.models import Project


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
