"""Cluster accounts: map a portal user to their account on a cluster, never root or a
system account (cluster_account_create)."""

from __future__ import annotations

from django.db import transaction

from accounts.models import User
from jobs.models import ClusterAccount
from jobs.validation import validate_cluster_username
from quotas.models import Cluster

# --- cluster accounts --------------------------------------------------------------------


@transaction.atomic
def cluster_account_create(
    *, actor: User | None, user: User, cluster: Cluster, username: str, uid: int | None = None
) -> ClusterAccount:
    """Map a portal user to their account on a cluster (never root or a system account)."""
    validate_cluster_username(username, uid)
    account, _ = ClusterAccount.objects.update_or_create(
        user=user, cluster=cluster, defaults={"username": username, "uid": uid}
    )
    return account
