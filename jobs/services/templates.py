"""Job templates: create a template that prefills the submit form, for a project (by its
PI or a manager) or global (by facility staff)."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import transaction

from accounts.models import Project, ProjectMember, User
from accounts.roles import PROJECT_MANAGER_ROLES
from jobs.drafts import DEFAULT
from jobs.exceptions import InvalidJob
from jobs.models import JobTemplate
from portal.errors import PermissionDenied
from quotas.models import Cluster

# --- templates -----------------------------------------------------------------------------


@transaction.atomic
def job_template_create(
    *,
    user: User,
    project: Project | None,
    name: str,
    cluster: Cluster | None = None,
    description: str = "",
    script: str = "",
    image: str = "",
    command: Sequence[str] = (),
    gpus: int = DEFAULT.gpus,
    gpu_type: str = "",
    cpus: int = DEFAULT.cpus,
    memory_mb: int = DEFAULT.memory_mb,
    time_limit_minutes: int = DEFAULT.time_limit_minutes,
) -> JobTemplate:
    """A template prefilling the submit form: for a project (its PI or manager) or global
    (facility staff)."""
    if project is None:
        if not user.is_staff:
            raise PermissionDenied("Only facility staff may create global templates")
    elif not ProjectMember.objects.filter(
        project=project,
        user=user,
        role__in=PROJECT_MANAGER_ROLES,
    ).exists():
        raise PermissionDenied("Only the project's PI or a manager may create its templates")
    if not name.strip():
        raise InvalidJob("name must not be empty", field="name")
    max_bytes = settings.GPUC_MAX_SCRIPT_BYTES
    if len(script.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidJob(f"script must be at most {max_bytes} bytes", field="script")
    if cluster is not None and gpu_type and gpu_type not in cluster.gpu_types:
        raise InvalidJob(f"Unknown GPU type '{gpu_type}' on {cluster.name}", field="gpu_type")
    for field_name, value, minimum in (
        ("gpus", gpus, 0),
        ("cpus", cpus, 1),
        ("memory_mb", memory_mb, 1),
        ("time_limit_minutes", time_limit_minutes, 1),
    ):
        if value < minimum:
            raise InvalidJob(f"{field_name} must be at least {minimum}", field=field_name)
    return JobTemplate.objects.create(
        project=project,
        name=name.strip(),
        description=description,
        cluster=cluster,
        script=script,
        image=image,
        command=list(command or []),
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=cpus,
        memory_mb=memory_mb,
        time_limit_minutes=time_limit_minutes,
    )
