"""Reads for project storage, scoped to the caller's projects."""

from __future__ import annotations

import uuid as uuid_lib

from django.conf import settings

from accounts.models import Project, User
from jobs.backends import get_backend
from jobs.selectors import projects_for_user
from jobs.storage.exceptions import StorageNotFound
from jobs.storage.models import ProjectStorage
from quotas.models import Cluster


def storage_project_for_user(*, user: User, project_uuid: uuid_lib.UUID | str) -> Project:
    """One of the caller's active projects; anyone else's (or a bad id) is a 404."""
    try:
        key = uuid_lib.UUID(str(project_uuid))
    except ValueError:
        raise StorageNotFound("No such project") from None
    project = projects_for_user(user=user).filter(uuid=key).first()
    if project is None:
        raise StorageNotFound("No such project")
    return project


def storage_clusters(*, project: Project) -> list[Cluster]:
    """Enabled clusters the project has an allocation on whose backend keeps project folders."""
    clusters = (
        Cluster.objects.filter(enabled=True, allocations__project=project)
        .distinct()
        .order_by("name")
    )
    return [c for c in clusters if get_backend(c).project_storage_root() is not None]


def storage_quota_bytes(*, project: Project) -> int:
    row = ProjectStorage.objects.filter(project=project).only("quota_bytes").first()
    return row.quota_bytes if row else int(settings.GPUC_STORAGE_DEFAULT_QUOTA_BYTES)
