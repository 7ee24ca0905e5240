"""Cluster access requests: a member asks for an account on a cluster for a project; the
cluster's policy approves it at once ("auto", for a project with an active allocation there)
or staff do; approval provisions the identity through the cluster's provisioner.

Provisioning is a process or network call, so it never runs inside a transaction: the request
is claimed (approved -> provisioning) in one, the provisioner is called, and the result is
recorded in another. The provisioner marks what it creates with the request's key, so a retry
of the same request finds its own identity and succeeds; a failure after the identity was made
removes it again (nothing half-created). Removing a member from their last project that may use
a cluster removes the account the portal made there (cluster_access_revoke_departed).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator
from datetime import timedelta
from typing import cast

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Project, ProjectMember, User
from jobs import notifications, queue
from jobs.exceptions import (
    AccessRequestNotFound,
    AccessRequestState,
    AlreadyHasAccount,
    ClusterNameTaken,
    ClusterNotUsable,
    ClusterUnavailable,
    InvalidAccessRequest,
)
from jobs.models import ClusterAccessRequest, ClusterAccount
from jobs.provisioning import (
    Identity,
    NameTaken,
    Provisioner,
    ProvisionError,
    ProvisionUnavailable,
    access_policy,
    get_provisioner,
)
from jobs.provisioning.base import UID_MAX, UID_MIN, USERNAME_RE
from jobs.validation import SYSTEM_USERS, check_cluster_usable
from portal.errors import PermissionDenied
from quotas.models import Allocation, Cluster
from quotas.policy import is_facility_admin
from quotas.services import eligible_allocations

logger = logging.getLogger(__name__)

# A claim older than this is taken to be lost (its worker died) and may be claimed again.
STALE_CLAIM = timedelta(minutes=10)
MAX_CANDIDATES = 50
State = ClusterAccessRequest.State
NAME_RULE = (
    "A cluster user name is 1-32 characters: lower-case letters, digits, '_' or '-', "
    "starting with a letter or '_'"
)


# --- names -------------------------------------------------------------------------------


def check_cluster_username(username: str) -> None:
    """400 naming the problem unless `username` is a safe, non-system cluster user name."""
    if not USERNAME_RE.match(username):
        bad = sorted({c for c in username if not re.match(r"[a-z0-9_-]", c)})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            why = f"'{username}' contains characters that are not allowed: {shown}"
        elif not username:
            why = "the name is empty"
        elif len(username) > 32:
            why = f"'{username}' is longer than 32 characters"
        else:
            why = f"'{username}' must start with a letter or '_'"
        raise InvalidAccessRequest(f"{NAME_RULE}; {why}", field="username")
    if username in SYSTEM_USERS:
        raise InvalidAccessRequest(f"'{username}' is a system account", field="username")


def check_uid(uid: int | None) -> None:
    if uid is not None and not UID_MIN <= uid < UID_MAX:
        raise InvalidAccessRequest(
            f"uid {uid} is not allowed: cluster accounts have uid numbers from {UID_MIN} to "
            f"{UID_MAX - 1} (below {UID_MIN} are system accounts)",
            field="uid",
        )


def _base_name(user: User) -> str:
    for source in (user.email.partition("@")[0], user.username):
        text = unicodedata.normalize("NFKD", source).encode("ascii", "ignore").decode().lower()
        text = re.sub(r"[^a-z0-9_-]+", "-", text).strip("-")
        text = re.sub(r"^[^a-z_]+", "", text)[:28].rstrip("-")
        if text and text not in SYSTEM_USERS:
            return text
    return "user"


def username_candidates(user: User) -> Iterator[str]:
    """The derived names to try, in order: the email's local part (or the username) made
    Unix-valid, then the same with 2, 3, ... appended."""
    base = _base_name(user)
    yield base
    for n in range(2, MAX_CANDIDATES + 1):
        yield f"{base[: 32 - len(str(n))]}{n}"


def _portal_owner(cluster: Cluster, username: str, user: User) -> str:
    """Why `username` on `cluster` belongs to someone else in the portal ("" = it does not)."""
    if (
        ClusterAccount.objects.filter(cluster=cluster, username=username)
        .exclude(user=user)
        .exists()
    ):
        return f"'{username}' on cluster {cluster.name} belongs to another portal user"
    if (
        ClusterAccessRequest.objects.filter(
            cluster=cluster, username=username, state__in=ClusterAccessRequest.OPEN_STATES
        )
        .exclude(user=user)
        .exists()
    ):
        return f"'{username}' on cluster {cluster.name} is asked for by another portal user"
    return ""


def _host_owner(provisioner: Provisioner, cluster: Cluster, username: str) -> str:
    """Why `username` exists on the cluster already ("" = it does not). Never adopted."""
    try:
        existing = provisioner.lookup(username)
    except ProvisionUnavailable as exc:
        raise ClusterUnavailable(
            f"Cluster {cluster.name} cannot check user names right now ({exc}); try again later"
        ) from exc
    except ProvisionError as exc:
        raise ClusterUnavailable(f"Cluster {cluster.name} cannot check user names: {exc}") from exc
    if existing is None:
        return ""
    return (
        f"'{username}' already exists on cluster {cluster.name} and was not created for you by "
        "the portal; choose another name"
    )


def _choose_username(*, user: User, cluster: Cluster, provisioner: Provisioner, wanted: str) -> str:
    if wanted:
        check_cluster_username(wanted)
        why = _portal_owner(cluster, wanted, user) or _host_owner(provisioner, cluster, wanted)
        if why:
            raise ClusterNameTaken(why, field="username")
        return wanted
    for candidate in username_candidates(user):
        if not _portal_owner(cluster, candidate, user) and not _host_owner(
            provisioner, cluster, candidate
        ):
            return candidate
    raise ClusterNameTaken(
        f"No free user name derived from yours on cluster {cluster.name}: choose one",
        field="username",
    )


# --- requests ----------------------------------------------------------------------------


def _queue_provision(request_id: int) -> None:
    transaction.on_commit(lambda: queue.access_provision(request_id))


def access_request_create(
    *,
    actor: User,
    project: Project,
    cluster: Cluster,
    username: str = "",
    uid: int | None = None,
) -> ClusterAccessRequest:
    """Ask for an account on `cluster` for `project`. Approved at once when the cluster's
    access_policy is "auto" and the project has an active allocation there (provisioning is
    queued); otherwise pending until staff decide. 400 for a bad or taken name or uid."""
    if not ProjectMember.objects.filter(project=project, user=actor).exists():
        raise AccessRequestNotFound("No such project")
    check_cluster_usable(user=actor, project=project, cluster=cluster)
    provisioner = get_provisioner(cluster)
    if provisioner is None:
        raise ClusterNotUsable(
            f"Cluster {cluster.name} has no self-service accounts: ask a facility admin",
            field="cluster",
        )
    existing = ClusterAccount.objects.filter(user=actor, cluster=cluster).first()
    if existing is not None:
        raise AlreadyHasAccount(
            f"You already have the account {existing.username} on cluster {cluster.name}",
            field="cluster",
        )
    if ClusterAccessRequest.objects.filter(
        user=actor, cluster=cluster, state__in=ClusterAccessRequest.OPEN_STATES
    ).exists():
        raise AccessRequestState(
            f"You already asked for an account on cluster {cluster.name}", field="cluster"
        )
    check_uid(uid)
    if uid is not None and not provisioner.accepts_uid:
        raise InvalidAccessRequest(
            f"Cluster {cluster.name} hands out uid numbers itself: leave uid out", field="uid"
        )
    # Name checks ask the cluster (a process or network call): outside the transaction.
    username = _choose_username(
        user=actor, cluster=cluster, provisioner=provisioner, wanted=username.strip()
    )
    automatic = (
        access_policy(cluster) == "auto"
        and cast(
            QuerySet[Allocation], eligible_allocations(project=project, cluster=cluster)
        ).exists()
    )
    return _record_request(
        actor=actor,
        project=project,
        cluster=cluster,
        username=username,
        uid=uid,
        automatic=automatic,
    )


@transaction.atomic
def _record_request(
    *,
    actor: User,
    project: Project,
    cluster: Cluster,
    username: str,
    uid: int | None,
    automatic: bool,
) -> ClusterAccessRequest:
    now = timezone.now()
    request = ClusterAccessRequest(
        user=actor,
        project=project,
        cluster=cluster,
        username=username,
        uid=uid,
        automatic=automatic,
        state=State.APPROVED if automatic else State.PENDING,
        decided_at=now if automatic else None,
    )
    try:
        with transaction.atomic():
            request.save()
            # Re-checked under the unique constraints: a name another user took meanwhile.
            if why := _portal_owner(cluster, username, actor):
                raise ClusterNameTaken(why, field="username")
    except IntegrityError:
        raise ClusterNameTaken(
            f"'{username}' on cluster {cluster.name} was just asked for by someone else, or "
            "you already asked for this cluster",
            field="username",
        ) from None
    if automatic:
        _queue_provision(request.pk)
    else:
        notifications.notify_requester(request)
        notifications.notify_staff(request)
    return request


def _require_staff(actor: User, what: str) -> None:
    if not is_facility_admin(actor):
        raise PermissionDenied(f"Only facility admins may {what} access requests")


def _locked_pending(request: ClusterAccessRequest, what: str) -> ClusterAccessRequest:
    locked = ClusterAccessRequest.objects.select_for_update().get(pk=request.pk)
    if locked.state != State.PENDING:
        raise AccessRequestState(
            f"This request is {locked.get_state_display().lower()}; only a pending one can be "
            f"{what}"
        )
    return locked


@transaction.atomic
def access_request_approve(*, actor: User, request: ClusterAccessRequest) -> ClusterAccessRequest:
    """Staff approve a pending request; provisioning is queued when the approval commits."""
    _require_staff(actor, "approve")
    locked = _locked_pending(request, "approved")
    locked.state = State.APPROVED
    locked.decided_by = actor
    locked.decided_at = timezone.now()
    locked.save(update_fields=["state", "decided_by", "decided_at", "updated_at"])
    _queue_provision(locked.pk)
    return locked


@transaction.atomic
def access_request_reject(
    *, actor: User, request: ClusterAccessRequest, reason: str
) -> ClusterAccessRequest:
    """Staff reject a pending request with a reason the requester is told by email."""
    _require_staff(actor, "reject")
    reason = reason.strip()
    if not reason:
        raise InvalidAccessRequest("Say why the request is rejected", field="reason")
    locked = _locked_pending(request, "rejected")
    locked.state = State.REJECTED
    locked.reason = reason[:1000]
    locked.decided_by = actor
    locked.decided_at = timezone.now()
    locked.save(update_fields=["state", "reason", "decided_by", "decided_at", "updated_at"])
    notifications.notify_requester(locked)
    return locked


# --- provisioning ------------------------------------------------------------------------


def _identity(request: ClusterAccessRequest) -> Identity:
    return Identity(username=request.username, key=request.uuid.hex, uid=request.uid)


def _claim(request_id: int) -> bool:
    """approved -> provisioning (or a stale provisioning claim taken over): True if ours."""
    now = timezone.now()
    return bool(
        ClusterAccessRequest.objects.filter(pk=request_id)
        .filter(
            Q(state=State.APPROVED) | Q(state=State.PROVISIONING, claimed_at__lt=now - STALE_CLAIM)
        )
        .update(state=State.PROVISIONING, claimed_at=now, updated_at=now)
    )


@transaction.atomic
def _finish(
    request_id: int, *, state: str, reason: str = "", **fields: object
) -> ClusterAccessRequest:
    request = ClusterAccessRequest.objects.select_for_update().get(pk=request_id)
    request.state = state
    request.reason = reason[:1000]
    for name, value in fields.items():
        setattr(request, name, value)
    request.save()
    notifications.notify_requester(request)
    return request


def access_request_provision(*, request_id: int) -> ClusterAccessRequest:
    """Create the approved request's identity on its cluster and record its ClusterAccount
    (idempotent: a retry finds the identity this request made). Raises ProvisionUnavailable
    (after releasing the claim) when the cluster does not answer, so the task retries."""
    if not _claim(request_id):
        return ClusterAccessRequest.objects.get(pk=request_id)
    request = ClusterAccessRequest.objects.select_related("cluster", "user").get(pk=request_id)
    provisioner = get_provisioner(request.cluster)
    if provisioner is None:
        return _finish(
            request_id,
            state=State.FAILED,
            reason=f"Cluster {request.cluster.name} has no provisioner any more",
        )
    identity = _identity(request)
    try:
        made = provisioner.create(identity)
    except ProvisionUnavailable:
        ClusterAccessRequest.objects.filter(pk=request_id, state=State.PROVISIONING).update(
            state=State.APPROVED, claimed_at=None
        )
        raise
    except NameTaken as exc:
        return _finish(request_id, state=State.FAILED, reason=f"The name is taken: {exc}")
    except ProvisionError as exc:
        return _finish(request_id, state=State.FAILED, reason=str(exc))
    try:
        with transaction.atomic():
            account = ClusterAccount.objects.create(
                user=request.user,
                cluster=request.cluster,
                username=made.username,
                uid=made.uid,
                provision_key=identity.key,
            )
            return _finish(
                request_id,
                state=State.PROVISIONED,
                account=account,
                provisioned_at=timezone.now(),
            )
    except IntegrityError:
        # The user got an account on this cluster (or the name went to another) meanwhile:
        # undo the identity made for this request, so nothing is left half-created.
        reason = (
            f"You or someone else got '{made.username}' on cluster {request.cluster.name} "
            "meanwhile; the identity made for this request was removed"
        )
        try:
            provisioner.remove(identity)
        except (ProvisionError, ProvisionUnavailable) as exc:
            logger.error("Could not undo identity %s: %s", identity.username, exc)
            reason += f" (removal failed: {exc}; staff were told)"
        return _finish(request_id, state=State.FAILED, reason=reason)


# --- revocation --------------------------------------------------------------------------


def cluster_access_revoke_departed(*, user_id: int) -> list[str]:
    """Remove the accounts the portal made for `user_id` on clusters that none of their
    projects may use any more (no allocation there): the identity on the cluster first
    (provisioner.remove), then the ClusterAccount. Accounts the portal did not make are never
    touched. Returns the removed "user@cluster" names."""
    removed = []
    accounts = ClusterAccount.objects.filter(user_id=user_id).exclude(provision_key="")
    for account in accounts.select_related("cluster"):
        still_allowed = Allocation.objects.filter(
            clusters=account.cluster, project__memberships__user_id=user_id
        ).exists()
        if still_allowed:
            continue
        provisioner = get_provisioner(account.cluster)
        if provisioner is None:
            logger.warning("No provisioner to remove %s on %s", account.username, account.cluster)
            continue
        provisioner.remove(Identity(username=account.username, key=account.provision_key))
        _record_revoked(account)
        removed.append(str(account))
    return removed


@transaction.atomic
def _record_revoked(account: ClusterAccount) -> None:
    requests = list(
        ClusterAccessRequest.objects.select_for_update().filter(
            account=account, state=State.PROVISIONED
        )
    )
    ClusterAccount.objects.filter(pk=account.pk).delete()
    for request in requests:
        request.state = State.REVOKED
        request.reason = (
            f"You are no longer a member of a project that may use cluster {account.cluster.name}"
        )
        request.save(update_fields=["state", "reason", "updated_at"])
        notifications.notify_requester(request)
