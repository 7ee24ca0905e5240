"""Project accounts on clusters that manage them, and the limits pushed into the scheduler.

One tick per cluster (beat, like the sync): make the SchedulerAccount of every project that has
an allocation usable on the cluster, compute what every account should be (members with a
cluster account; limit and cap) in a constant number of queries, diff it against what was last
pushed, and push only the changed accounts in one batched backend call. A refused account is
recorded with the scheduler's message and retried with backoff; it never blocks the others.

The limit (AccountSpec.limit_su) is what the project may consume on this cluster in all since
its account was made: consumed there since then (charges on this cluster) + held for its open
jobs there + available on its active allocations usable there. The scheduler compares its own
count of the account's usage (never decayed, never reset) against it, so the room it leaves is
held + available. A suspended, exhausted or expired allocation adds nothing: no room for new
work; crediting adds room at the next tick. AccountSpec.blocked (no SU available here, or the
project closed) is decided here too, for backends that cannot count SU (Kubernetes blocks new
Pods on it).

Overspend bound with several clusters: an allocation usable on n clusters offers its whole
available A to each of them (splitting it would strand SU on idle clusters), so work that
never touches the portal can start on every cluster within one tick before the charges of the
others land: at most (n - 1) × A beyond the allocation, and only for work started directly
(portal submissions hold first and can never overspend). Once a cluster's work is charged,
every other cluster's limit shrinks by it at its next tick. tests/jobs/slurm/test_pushdown.py
checks this bound.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import DecimalField, ExpressionWrapper, F, Model, Q, QuerySet, Sum
from django.db.models.expressions import Combinable
from django.utils import timezone

from accounts.models import Project
from jobs.backends import get_backend
from jobs.backends.base import AccountSpec, AccountState
from jobs.exceptions import InvalidAccountSetting
from jobs.models import ClusterAccount, SchedulerAccount
from jobs.services.account_names import account_name, job_account, managed
from quotas.models import Allocation, Cluster, Hold, LedgerEntry
from quotas.services.batch import bulk_set

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
# slurmdbd 22.05 renumbers its association tree for every new association inside one
# transaction: creating 500 accounts in one call held MariaDB row locks past
# innodb_lock_wait_timeout and slurmdbd exited (seen on the dev cluster). New accounts are
# therefore created at most this many per tick (cluster option new_accounts_per_tick); limit
# changes of existing accounts are not capped.
NEW_ACCOUNTS_PER_TICK = 50
# slurmdbd 22.05 takes ~0.2 s per modified association and 24.11 ~13 ms with 10,000 accounts on
# the cluster, both in one POST (measured, bench/pushdown.py; one POST per association costs
# more on both): at most
# this many accounts are pushed per tick (cluster option pushes_per_tick), those whose room
# shrinks (suspension, closing, charges elsewhere) first: a stale lower limit only delays
# work, a stale higher one lets it overspend.
PUSHES_PER_TICK = 200
RETRY_BASE_SECONDS = 5
RETRY_MAX_SECONDS = 3600
MAX_GPU_CAP = 1_000_000
# slurmdbd hands a new account or association to slurmctld asynchronously after the push
# answered (seconds on the dev cluster): a refusal of an account pushed this recently, or of a
# user provisioned this recently, may only mean the news has not arrived yet.
ACCOUNT_SETTLE = timedelta(minutes=2)


@dataclass
class Wanted:
    account: SchedulerAccount
    spec: AccountSpec


@dataclass
class AccountsTick:
    created: int = 0
    pushed: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0
    deferred: int = 0  # left for the next ticks (new_accounts_per_tick, pushes_per_tick)


def _sum(query: QuerySet[Model], key: str, value: str | Combinable) -> dict[int, Decimal]:
    out: dict[int, Decimal] = {}
    for row in query.values(key).annotate(total=Sum(value)).values_list(key, "total"):
        out[row[0]] = row[1] or ZERO
    return out


def accounts_create_missing(*, cluster: Cluster) -> int:
    """SchedulerAccount rows for active projects with an allocation usable on `cluster` and no
    account there yet (idempotent under concurrent ticks: the unique constraints decide)."""
    have = SchedulerAccount.objects.filter(cluster=cluster).values("project_id")
    missing = Project.objects.filter(
        pk__in=Allocation.objects.filter(clusters=cluster, project__is_active=True)
        .exclude(project_id__in=have)
        .values("project_id")
    ).select_related("organization")
    rows = [
        SchedulerAccount(project=project, cluster=cluster, name=account_name(cluster, project))
        for project in missing
    ]
    if not rows:
        return 0
    created = SchedulerAccount.objects.bulk_create(rows, ignore_conflicts=True)
    return len(created)


def accounts_wanted(*, cluster: Cluster) -> list[Wanted]:
    """What every account of `cluster` should be (constant number of queries)."""
    now = timezone.now()
    # Archived projects close their accounts.
    SchedulerAccount.objects.filter(
        cluster=cluster, project__is_active=False, state__in=["wanted", "active"]
    ).update(state=SchedulerAccount.State.CLOSING)
    accounts = list(
        SchedulerAccount.objects.filter(cluster=cluster).exclude(
            state=SchedulerAccount.State.CLOSED, pushed_closed=True
        )
    )
    # Sums over the whole cluster (no list of project ids: a join costs less than 10,000
    # parameters); rows of projects without an account are simply not looked up.
    names = {
        pid: f"{org}.{slug}"
        for pid, org, slug in Project.objects.filter(
            scheduler_accounts__cluster=cluster
        ).values_list("pk", "organization__slug", "slug")
    }
    active = Q(status=Allocation.Status.ACTIVE, starts_at__lte=now, ends_at__gt=now)
    available = _sum(
        Allocation.objects.filter(active, clusters=cluster),
        "project_id",
        F("credited") - F("held") - F("charged"),
    )
    held = _sum(
        Hold.objects.filter(
            cluster=cluster,
            state=Hold.State.OPEN,
            allocation__status=Allocation.Status.ACTIVE,
        ),
        "allocation__project_id",
        ExpressionWrapper(
            F("amount") - F("charged") - F("released"),
            output_field=DecimalField(max_digits=20, decimal_places=6),
        ),
    )
    consumed = _sum(
        LedgerEntry.objects.filter(
            cluster=cluster,
            kind=LedgerEntry.Kind.CHARGE,
            allocation__project__scheduler_accounts__cluster=cluster,
            created_at__gte=F("allocation__project__scheduler_accounts__created_at"),
        ),
        "allocation__project_id",
        "amount",
    )
    users: dict[int, set[str]] = defaultdict(set)
    if get_backend(cluster).account_users:
        for project_id, username in ClusterAccount.objects.filter(
            cluster=cluster,
            user__project_memberships__project__scheduler_accounts__cluster=cluster,
            user__is_active=True,
        ).values_list("user__project_memberships__project_id", "username"):
            users[project_id].add(username)
    out = []
    for account in accounts:
        pid = account.project_id
        closed = account.state in (SchedulerAccount.State.CLOSING, SchedulerAccount.State.CLOSED)
        room = max(available.get(pid, ZERO), ZERO)
        limit = consumed.get(pid, ZERO) + held.get(pid, ZERO) + room
        spec = AccountSpec(
            name=account.name,
            project=names.get(pid, ""),
            users=() if closed else tuple(sorted(users[pid])),
            limit_su=ZERO if closed else limit,
            gpu_cap=account.gpu_cap,
            closed=closed,
            # The one place "no new work" is decided: nothing available on an active
            # allocation usable here (suspended, exhausted, expired) or the project closed.
            blocked=closed or room <= ZERO,
        )
        out.append(Wanted(account, spec))
    return out


def _pushed_matches(account: SchedulerAccount, spec: AccountSpec) -> bool:
    return (
        account.pushed_at is not None
        and account.pushed_limit_su == spec.limit_su
        and account.pushed_gpu_cap == spec.gpu_cap
        and sorted(account.pushed_users or []) == list(spec.users)
        and account.pushed_closed == spec.closed
        and account.pushed_blocked == spec.blocked
    )


def _urgency(wanted: Wanted) -> tuple[int, Decimal]:
    """Shrinking room first (closing, then the biggest cut), then new accounts, then growth."""
    account, spec = wanted.account, wanted.spec
    if spec.closed:
        return (0, ZERO)
    pushed = account.pushed_limit_su
    if pushed is not None and spec.limit_su is not None and spec.limit_su < pushed:
        return (1, spec.limit_su - pushed)
    return (2, ZERO) if pushed is None else (3, ZERO)


def accounts_sync(*, cluster: Cluster, force: bool = False) -> AccountsTick:
    """One push tick for `cluster`: create missing accounts, push the changed ones (all of them
    with `force`, e.g. the repair button) in one batched call, record results. Backend
    unavailability propagates (the next tick retries); no transaction spans the call."""
    tick = AccountsTick()
    if not managed(cluster):
        return tick
    tick.created = accounts_create_missing(cluster=cluster)
    now = timezone.now()
    due = []
    new_room = int((cluster.options or {}).get("new_accounts_per_tick", NEW_ACCOUNTS_PER_TICK))
    for wanted in accounts_wanted(cluster=cluster):
        account = wanted.account
        if not force and _pushed_matches(account, wanted.spec):
            tick.unchanged += 1
            continue
        if not force and account.retry_at is not None and account.retry_at > now:
            continue
        if account.pushed_at is None:
            if new_room <= 0:
                tick.deferred += 1
                continue
            new_room -= 1
        due.append(wanted)
    if not due:
        return tick
    room = int((cluster.options or {}).get("pushes_per_tick", PUSHES_PER_TICK))
    if len(due) > room:
        due.sort(key=_urgency)
        tick.deferred += len(due) - room
        due = due[:room]
    refused = get_backend(cluster).push_accounts([w.spec for w in due])
    accounts_record_push(due=due, refused=refused)
    tick.pushed = len(due) - len(refused)
    tick.refused = refused
    return tick


@transaction.atomic
def accounts_record_push(*, due: list[Wanted], refused: dict[str, str]) -> None:
    """Store what was pushed (or the refusal and the next retry) for each pushed account."""
    now = timezone.now()
    rows = []
    for wanted in due:
        account, spec = wanted.account, wanted.spec
        message = refused.get(spec.name)
        if message is None:
            account.pushed_limit_su = spec.limit_su
            account.pushed_unlimited = spec.limit_su is None
            account.pushed_gpu_cap = spec.gpu_cap
            account.pushed_users = list(spec.users)
            account.pushed_closed = spec.closed
            account.pushed_blocked = spec.blocked
            account.pushed_at = now
            account.last_error = ""
            account.attempts = 0
            account.retry_at = None
            if spec.closed:
                account.state = SchedulerAccount.State.CLOSED
                account.closed_at = account.closed_at or now
            else:
                account.state = SchedulerAccount.State.ACTIVE
        else:
            account.last_error = message[:1000]
            account.attempts += 1
            delay = min(RETRY_BASE_SECONDS * 2 ** (account.attempts - 1), RETRY_MAX_SECONDS)
            account.retry_at = now + timedelta(seconds=delay)
            logger.warning("Scheduler refused account %s: %s", spec.name, message)
        rows.append(account)
    # One UPDATE ... FROM UNNEST for all of them (Django's bulk_update writes a CASE per field
    # and row: 4 s for 1,000 accounts in bench/pushdown.py).
    bulk_set(
        SchedulerAccount,
        PUSH_FIELDS,
        [(a.pk, *(getattr(a, name) for name in PUSH_FIELDS)) for a in rows],
    )


PUSH_FIELDS = (
    "pushed_limit_su",
    "pushed_unlimited",
    "pushed_gpu_cap",
    "pushed_users",
    "pushed_closed",
    "pushed_blocked",
    "pushed_at",
    "last_error",
    "attempts",
    "retry_at",
    "state",
    "closed_at",
)


@dataclass(frozen=True)
class Drift:
    name: str
    project: str
    wanted_users: tuple[str, ...]
    held_users: tuple[str, ...] | None  # None: the scheduler has no such account
    wanted_limits: dict[str, str]
    held_limits: dict[str, str]

    @property
    def drifted(self) -> bool:
        return (
            self.held_users is None
            or self.wanted_users != self.held_users
            or self.wanted_limits != self.held_limits
        )


def accounts_drift(*, cluster: Cluster) -> list[Drift]:
    """Wanted against what the scheduler holds for every account of `cluster` (one read)."""
    backend = get_backend(cluster)
    wanted = accounts_wanted(cluster=cluster)
    held: dict[str, AccountState] = backend.read_accounts([w.spec.name for w in wanted])
    out = []
    for w in wanted:
        state = held.get(w.spec.name)
        out.append(
            Drift(
                name=w.spec.name,
                project=w.spec.project,
                wanted_users=w.spec.users,
                held_users=state.users if state else None,
                wanted_limits=dict(backend.account_limits(w.spec)),
                held_limits=dict(state.limits) if state else {},
            )
        )
    return out


def account_wait() -> timedelta:
    """How long after its submission a job may wait for its cluster account (settings)."""
    return timedelta(seconds=settings.JOBS_ACCOUNT_WAIT_SECONDS)


def account_settling(
    *, cluster: Cluster, project_id: int, username: str, submitted: datetime
) -> str:
    """Why a job submitted at `submitted` that the cluster refused for its account (or the
    user's association with it) should wait rather than be rejected: the portal manages the
    cluster's accounts and has not pushed this one with this user yet, or did so (or
    provisioned the user) moments ago, so the cluster may not have learnt it. "" when the
    refusal is final: the cluster is not managed, or the job has waited account_wait()."""
    now = timezone.now()
    if not managed(cluster) or submitted < now - account_wait():
        return ""
    account = SchedulerAccount.objects.filter(cluster=cluster, project_id=project_id).first()
    name = account.name if account is not None else job_account(cluster, project_id)
    until = f"until {(submitted + account_wait()):%H:%M} UTC"
    if account is None or account.pushed_at is None or username not in (account.pushed_users or []):
        refused = account.last_error[:200] if account is not None else ""
        why = f" (last refusal: {refused})" if refused else ""
        return (
            f"Waiting for the cluster account: the portal is setting up account {name} for "
            f"{username} on cluster {cluster.name}{why}; the job is retried {until}"
        )
    recent = now - ACCOUNT_SETTLE
    provisioned = ClusterAccount.objects.filter(
        cluster=cluster, username=username, created_at__gt=recent
    ).exists()
    if account.pushed_at > recent or account.created_at > recent or provisioned:
        return (
            f"Waiting for the cluster account: cluster {cluster.name} has not learnt account "
            f"{name} for {username} yet (just set up); the job is retried {until}"
        )
    return ""


def scheduler_account_set_cap(*, account: SchedulerAccount, gpu_cap: int | None) -> None:
    """Set a project's concurrent GPU cap on one cluster (pushed at the next tick)."""
    if gpu_cap is not None and (
        isinstance(gpu_cap, bool) or not isinstance(gpu_cap, int) or not 0 <= gpu_cap <= MAX_GPU_CAP
    ):
        raise InvalidAccountSetting(
            f"gpu_cap must be a whole number from 0 to {MAX_GPU_CAP} (or empty for no cap).",
            field="gpu_cap",
        )
    SchedulerAccount.objects.filter(pk=account.pk).update(gpu_cap=gpu_cap)
    account.gpu_cap = gpu_cap


__all__ = [
    "AccountsTick",
    "Drift",
    "account_name",
    "account_settling",
    "account_wait",
    "accounts_create_missing",
    "accounts_drift",
    "accounts_sync",
    "accounts_wanted",
    "scheduler_account_set_cap",
]
