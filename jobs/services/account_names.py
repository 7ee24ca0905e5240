"""The name of a project's scheduler account on a cluster, and which account a portal job of
the project runs under (one rule per backend, asked here only: used by the account push and
by job submission)."""

from __future__ import annotations

from accounts.models import Project
from jobs.backends import get_backend
from quotas.models import Cluster


def qualified_project(project: Project) -> str:
    """The project's name for backends: "<organization slug>.<project slug>". Project slugs are
    unique only within an organization, and a slug never holds a dot, so this is unique."""
    return f"{project.organization.slug}.{project.slug}"


def account_name(cluster: Cluster, project: Project | int) -> str:
    """The project's account on `cluster`, by its backend's rule (Slurm:
    <account_prefix><project id>; Kubernetes: the project's namespace). A project id costs one
    query for the project; pass the Project (organization selected) where it is at hand."""
    if not isinstance(project, Project):
        project = Project.objects.select_related("organization").get(pk=project)
    name = get_backend(cluster).account_name(qualified_project(project), project.pk)
    if name is None:
        raise ValueError(f"Cluster {cluster.name} has no project accounts")
    return name


def managed(cluster: Cluster) -> bool:
    """Does the portal manage project accounts on this cluster?"""
    return bool(get_backend(cluster).manages_accounts)


def job_account(cluster: Cluster, project: Project | int) -> str:
    """The account a portal job of this project runs under ('' = the cluster's default; on a
    managed cluster always the project's own account, never another's)."""
    return account_name(cluster, project) if managed(cluster) else ""
