"""The name of a project's scheduler account on a cluster, and which account a portal job of
the project runs under (one rule, used by the account push and by job submission)."""

from __future__ import annotations

from jobs.backends import get_backend
from quotas.models import Cluster


def account_name(cluster: Cluster, project_id: int) -> str:
    """<account_prefix><project id>: deterministic, unique per cluster, a valid Slurm account
    name (the prefix is checked by the backend's options check)."""
    prefix = str((cluster.options or {}).get("account_prefix") or "gpuc")
    return f"{prefix}{project_id}"


def managed(cluster: Cluster) -> bool:
    """Does the portal manage project accounts on this cluster?"""
    return bool(get_backend(cluster).manages_accounts)


def job_account(cluster: Cluster, project_id: int) -> str:
    """The account a portal job of this project runs under ('' = the cluster's default; on a
    managed cluster always the project's own account, never another's)."""
    return account_name(cluster, project_id) if managed(cluster) else ""
