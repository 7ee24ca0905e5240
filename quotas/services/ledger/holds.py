"""Holds: a lien on the earliest-ending eligible allocation that covers a job's most it can
cost, placed before the job is forwarded, one at a time (ledger_hold) or a submission's worth
at once (ledger_hold_many). insert_holds writes a hold and its entry for every path that places
one (here and direct charges); the one-statement fast path writes the same rows in SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounts.models import Project, User
from quotas.exceptions import AllocationSuspended, InsufficientQuota, InsufficientQuotaForBatch
from quotas.models import ZERO, Allocation, Cluster, Hold, LedgerEntry
from quotas.services.ledger.amounts import positive_amount
from quotas.services.ledger.posting import move_counters_by


def insert_holds(
    holds: Sequence[Hold],
    *,
    actor: User | None,
    memos: Sequence[str],
    kinds: Sequence[str] = (LedgerEntry.Kind.HOLD,),
) -> list[LedgerEntry]:
    """Insert the new `holds` and, for each, one entry of its amount per kind in `kinds` (its
    `hold` entry; a hold settled at once has its `charge` too) keyed "<hold key>:<kind>", in
    two statements. The counters are the caller's: moved already, or by move_counters_by."""
    Hold.objects.bulk_create(holds)
    return LedgerEntry.objects.bulk_create(
        LedgerEntry(
            allocation_id=hold.allocation_id,
            kind=kind,
            amount=hold.amount,
            idempotency_key=f"{hold.key}:{kind}",
            actor=actor,
            memo=memo,
            job_uuid=hold.job_uuid,
            hold=hold,
            cluster_id=hold.cluster_id,
            created_at=hold.created_at,
        )
        for hold, memo in zip(holds, memos, strict=True)
        for kind in kinds
    )


def eligible_allocations(
    *, project: Project, cluster: Cluster, at: datetime | None = None
) -> QuerySet[Allocation]:
    """Active allocations of `project` valid on `cluster` now, earliest-ending first."""
    at = at or timezone.now()
    return Allocation.objects.filter(
        project=project,
        clusters=cluster,
        status=Allocation.Status.ACTIVE,
        starts_at__lte=at,
        ends_at__gt=at,
    ).order_by("ends_at", "id")


def ledger_hold(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    amount: Decimal,
    key: str,
    job_uuid: uuid.UUID | None = None,
    memo: str = "",
) -> Hold:
    """Place a lien of `amount` on the earliest-ending eligible allocation that can cover it.

    Raises InsufficientQuota (with the shortfall) when none can, or AllocationSuspended when
    only suspended allocations could. Same key -> same hold, even when two calls race.
    """
    value = positive_amount(amount)
    if connection.vendor == "postgresql":
        # The common case in one statement and no savepoint: a repeated key is found by the
        # statement itself (and a racing one is skipped by ON CONFLICT), so no error can
        # abort the caller's transaction here.
        fast = _place_hold_one_statement(
            actor=actor,
            project=project,
            cluster=cluster,
            value=value,
            key=key,
            job_uuid=job_uuid,
            memo=memo,
            now=timezone.now(),
        )
        if fast is not None:
            return fast
    # Optimistic: no read of the key first (a key is nearly always new). A repeated key fails
    # the hold's unique key, which rolls back everything of ours (balance included) to the
    # savepoint; a repeated key that meets a refusal (the balance was spent since) still
    # returns the first hold.
    try:
        return _place_hold(
            actor=actor,
            project=project,
            cluster=cluster,
            value=value,
            key=key,
            job_uuid=job_uuid,
            memo=memo,
        )
    except (IntegrityError, InsufficientQuota, AllocationSuspended):
        if existing := Hold.objects.filter(key=key).first():
            return existing
        raise


@transaction.atomic
def _place_hold(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    value: Decimal,
    key: str,
    job_uuid: uuid.UUID | None,
    memo: str,
) -> Hold:
    """The walk over the candidates (within a savepoint): an allocation that covers `value`
    but is not the first that could, or a refusal explained."""
    now = timezone.now()
    rows = [
        _Candidate(*row)
        for row in Allocation.objects.filter(
            project=project,
            clusters=cluster,
            status__in=[Allocation.Status.ACTIVE, Allocation.Status.SUSPENDED],
            starts_at__lte=now,
            ends_at__gt=now,
        )
        .order_by("ends_at", "id")
        .values_list("pk", "uuid", "status", "status_reason", "credited", "held", "charged")
    ]
    active = [r for r in rows if r.status == Allocation.Status.ACTIVE]
    chosen = None
    for row in active:
        if row.available < value:
            continue
        # One conditional UPDATE both locks the row and re-checks the balance on its current
        # version (PostgreSQL re-evaluates the WHERE after waiting for a concurrent writer),
        # so two holds can never both take the last SU, and no row is locked while reading.
        placed = Allocation.objects.filter(
            pk=row.pk,
            status=Allocation.Status.ACTIVE,
            ends_at__gt=now,
            credited__gte=F("held") + F("charged") + value,
        ).update(held=F("held") + value)
        if placed:
            chosen = row
            break
    if chosen is None:
        _refuse_hold(project=project, cluster=cluster, value=value, rows=rows)
    hold = Hold(
        allocation_id=chosen.pk,
        cluster=cluster,
        amount=value,
        key=key,
        job_uuid=job_uuid,
        created_at=now,
    )
    # The conditional UPDATE above has moved `held` already.
    insert_holds([hold], actor=actor, memos=[memo])
    return hold


def hold_ctes(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    amount: Decimal,
    key: str,
    job_uuid: uuid.UUID | None,
    memo: str,
    now: datetime,
    fresh_key: bool = False,
) -> tuple[str, dict[str, Any], Decimal]:
    """The common case of a hold as common table expressions, for ONE statement that the caller
    finishes (ledger_hold; a job's submission adds the job that reads `hold`): `existing` (a
    hold with this key), `chosen` (the earliest-ending active allocation that covers `value`,
    its `held` moved by a conditional UPDATE re-checked on the row's current version, so the
    last SU is never taken twice; nothing when the key exists), `hold` (id, allocation_id:
    the new hold, skipped by ON CONFLICT when a concurrent transaction inserted the key
    meanwhile; with `fresh_key`, a key just made up by the caller, such a clash fails the
    statement instead) and `entry` (its `hold` ledger entry): the rows insert_holds writes.
    Returns the SQL after WITH, its parameters by name (each value once: a statement of at most
    50 parameters keeps its conversion cached in psycopg), and the amount as held
    (InvalidAmount when it is not a positive amount of SU)."""
    value = positive_amount(amount)
    allocations, link = Allocation._meta.db_table, Allocation.clusters.through._meta.db_table
    holds, entries = Hold._meta.db_table, LedgerEntry._meta.db_table
    active = Allocation.Status.ACTIVE.value
    sql = f"""
        existing AS (
            SELECT id FROM {holds} WHERE key = %(key)s
        ), chosen AS (
            UPDATE {allocations} SET held = held + %(value)s
            WHERE id = (
                SELECT a.id FROM {allocations} a JOIN {link} l ON l.allocation_id = a.id
                WHERE a.project_id = %(project)s AND l.cluster_id = %(cluster)s
                  AND a.status = %(active)s AND a.starts_at <= %(now)s AND a.ends_at > %(now)s
                  AND a.credited >= a.held + a.charged + %(value)s
                ORDER BY a.ends_at, a.id LIMIT 1
            )
              AND status = %(active)s AND ends_at > %(now)s
              AND credited >= held + charged + %(value)s
              AND NOT EXISTS (SELECT 1 FROM existing)
            RETURNING id
        ), hold AS (
            INSERT INTO {holds} (allocation_id, cluster_id, amount, charged, released, state,
                                 job_uuid, key, created_at, settled_at)
            SELECT id, %(cluster)s, %(value)s, 0, 0, %(open)s, %(job_uuid)s, %(key)s, %(now)s,
                   NULL
            FROM chosen
            {"" if fresh_key else "ON CONFLICT (key) DO NOTHING"}
            RETURNING id, allocation_id
        ), entry AS (
            INSERT INTO {entries} (allocation_id, kind, amount, cluster_id, hold_id, actor_id,
                                   memo, job_uuid, idempotency_key, created_at)
            SELECT allocation_id, %(kind)s, %(value)s, %(cluster)s, id, %(actor)s, %(memo)s,
                   %(job_uuid)s, %(entry_key)s, %(now)s
            FROM hold
        )"""  # noqa: S608 (table names from the models; every value is a parameter)
    params = {
        "key": key,
        "value": value,
        "project": project.pk,
        "cluster": cluster.pk,
        "active": active,
        "now": now,
        "open": Hold.State.OPEN.value,
        "job_uuid": job_uuid,
        "kind": LedgerEntry.Kind.HOLD.value,
        "actor": actor.pk if actor else None,
        "memo": memo,
        "entry_key": f"{key}:hold",
    }
    return sql, params, value


def placed_hold(
    *, hold_id: int, allocation_id: int, cluster: Cluster, value: Decimal, key: str,
    job_uuid: uuid.UUID | None, now: datetime,
) -> Hold:  # fmt: skip
    """The Hold that hold_ctes inserted, as a saved instance (no read back)."""
    hold = Hold(
        pk=hold_id,
        allocation_id=allocation_id,
        cluster=cluster,
        amount=value,
        key=key,
        job_uuid=job_uuid,
        created_at=now,
    )
    hold._state.adding = False
    hold._state.db = connection.alias
    return hold


def _place_hold_one_statement(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    value: Decimal,
    key: str,
    job_uuid: uuid.UUID | None,
    memo: str,
    now: datetime,
) -> Hold | None:
    """ledger_hold's common case in ONE round trip (PostgreSQL) and without a savepoint (see
    hold_ctes). A key that exists already updates nothing and answers its hold; a key that a
    concurrent transaction inserted meanwhile gives back the balance moved for it and answers
    the winner's hold. None when no row was updated (nothing covers it, or a concurrent hold
    took the balance): the caller then walks the candidates one by one and explains a
    refusal."""
    ctes, params, _ = hold_ctes(
        actor=actor, project=project, cluster=cluster, amount=value, key=key,
        job_uuid=job_uuid, memo=memo, now=now,
    )  # fmt: skip
    sql = f"""WITH {ctes}
        SELECT (SELECT id FROM hold), (SELECT allocation_id FROM hold),
               (SELECT id FROM chosen), (SELECT id FROM existing)"""  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        hold_id, allocation_id, updated_id, existing_id = cursor.fetchone()
    if existing_id is not None:
        return Hold.objects.get(pk=existing_id)
    if hold_id is None:
        if updated_id is None:
            return None
        # A concurrent call with the same key committed its hold first: give back what this
        # one moved, and answer with that hold.
        Allocation.objects.filter(pk=updated_id).update(held=F("held") - value)
        return Hold.objects.get(key=key)
    return placed_hold(
        hold_id=hold_id, allocation_id=allocation_id, cluster=cluster, value=value, key=key,
        job_uuid=job_uuid, now=now,
    )  # fmt: skip


@dataclass(frozen=True)
class _Candidate:
    pk: int
    uuid: uuid.UUID
    status: str
    status_reason: str
    credited: Decimal
    held: Decimal
    charged: Decimal

    @property
    def available(self) -> Decimal:
        return self.credited - self.held - self.charged


def _refuse_hold(
    *, project: Project, cluster: Cluster, value: Decimal, rows: list[_Candidate]
) -> NoReturn:
    active = [r for r in rows if r.status == Allocation.Status.ACTIVE]
    suspended = [r for r in rows if r.status == Allocation.Status.SUSPENDED]
    if suspended and (not active or any(r.available >= value for r in suspended)):
        reasons = "; ".join(
            f"allocation {r.uuid} is suspended: {r.status_reason or 'no reason given'}"
            for r in suspended
        )
        raise AllocationSuspended(
            f"Project '{project.name}' cannot spend on cluster '{cluster.name}': {reasons}",
            reason=suspended[0].status_reason,
            allocation=str(suspended[0].uuid),
        )
    best = max((r.available for r in active), default=ZERO)
    raise InsufficientQuota(
        f"Insufficient quota: this job needs {value} SU but project '{project.name}' has "
        f"at most {best} SU available on one allocation for cluster '{cluster.name}' "
        f"(short by {value - best} SU)",
        required=value,
        available=best,
    )


def ledger_hold_many(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    holds: Sequence[tuple[Decimal, str, uuid.UUID | None, str]],
) -> list[Hold]:
    """Place the holds (amount, key, job_uuid, memo) of one submission, all or nothing, in a
    handful of statements whatever their number: the same Hold rows, `hold` entries (key
    "<key>:hold") and counters as ledger_hold called on each in order, and the same policy
    (each hold on the earliest-ending active allocation that still covers it, so the holds
    spread over several allocations when one runs out).

    When they do not all fit, nothing is held and InsufficientQuotaForBatch carries the whole
    batch's required/available (available: what the holds before the first misfit took plus
    the most one allocation still had for it) and that hold's index; AllocationSuspended as
    ledger_hold raises it. A key that already exists (a retry, or a key repeated within the
    batch) makes the whole batch take the sequential path, so same key -> same hold."""
    items = [
        (positive_amount(amount), key, job_uuid, memo) for amount, key, job_uuid, memo in holds
    ]
    if not items:
        return []
    try:
        # Optimistic, like ledger_hold: keys are nearly always new, so no read of them first;
        # a repeated key fails the bulk insert and rolls all of this back to the savepoint.
        with transaction.atomic():
            return _place_holds(actor=actor, project=project, cluster=cluster, items=items)
    except IntegrityError:
        pass
    with transaction.atomic():
        placed: list[Hold] = []
        held = ZERO
        for i, (value, key, job_uuid, memo) in enumerate(items):
            try:
                hold = ledger_hold(
                    actor=actor,
                    project=project,
                    cluster=cluster,
                    amount=value,
                    key=key,
                    job_uuid=job_uuid,
                    memo=memo,
                )
            except InsufficientQuota as exc:
                _refuse_batch(project, cluster, items, index=i, available=held + exc.available)
            placed.append(hold)
            held += hold.amount
        return placed


def _place_holds(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    items: list[tuple[Decimal, str, uuid.UUID | None, str]],
) -> list[Hold]:
    now = timezone.now()
    link = Allocation.clusters.through
    # The row locks, in the order every other multi-allocation writer takes them.
    allocations = list(
        Allocation.objects.select_for_update(no_key=True)
        .filter(
            project=project,
            status=Allocation.Status.ACTIVE,
            starts_at__lte=now,
            ends_at__gt=now,
            pk__in=link.objects.filter(cluster=cluster).values("allocation_id"),
        )
        .order_by("ends_at", "id")
    )
    left = {a.pk: a.available for a in allocations}
    chosen: list[Allocation] = []
    held = ZERO
    for i, (value, _key, _job_uuid, _memo) in enumerate(items):
        target = next((a for a in allocations if left[a.pk] >= value), None)
        if target is None:
            _refuse_at(
                project=project,
                cluster=cluster,
                items=items,
                index=i,
                held=held,
                rows=[
                    _Candidate(
                        a.pk,
                        a.uuid,
                        a.status,
                        a.status_reason,
                        a.credited,
                        a.held + (a.available - left[a.pk]),
                        a.charged,
                    )
                    for a in allocations
                ],
                now=now,
            )
        left[target.pk] -= value
        held += value
        chosen.append(target)
    placed = [
        Hold(
            allocation=allocation,
            cluster=cluster,
            amount=value,
            key=key,
            job_uuid=job_uuid,
            created_at=now,
        )
        for allocation, (value, key, job_uuid, _memo) in zip(chosen, items, strict=True)
    ]
    entries = insert_holds(placed, actor=actor, memos=[memo for *_, memo in items])
    move_counters_by(allocations, entries, actor=actor)
    return placed


def _refuse_at(
    *,
    project: Project,
    cluster: Cluster,
    items: list[tuple[Decimal, str, uuid.UUID | None, str]],
    index: int,
    held: Decimal,
    rows: list[_Candidate],
    now: datetime,
) -> NoReturn:
    """Hold `index` fits nowhere once the holds before it are placed (`rows`: the active
    allocations as they would then be): AllocationSuspended as ledger_hold would raise it,
    else the batch's InsufficientQuotaForBatch. Only refusals read the suspended rows."""
    suspended = [
        _Candidate(*row)
        for row in Allocation.objects.filter(
            project=project,
            clusters=cluster,
            status=Allocation.Status.SUSPENDED,
            starts_at__lte=now,
            ends_at__gt=now,
        )
        .order_by("ends_at", "id")
        .values_list("pk", "uuid", "status", "status_reason", "credited", "held", "charged")
    ]
    try:
        _refuse_hold(project=project, cluster=cluster, value=items[index][0], rows=rows + suspended)
    except InsufficientQuota as exc:
        _refuse_batch(project, cluster, items, index=index, available=held + exc.available)


def _refuse_batch(
    project: Project,
    cluster: Cluster,
    items: list[tuple[Decimal, str, uuid.UUID | None, str]],
    *,
    index: int,
    available: Decimal,
) -> NoReturn:
    total = sum((value for value, *_ in items), ZERO)
    raise InsufficientQuotaForBatch(
        f"Insufficient quota: these {len(items)} holds need {total} SU but project "
        f"'{project.name}' could hold only {available} SU on cluster '{cluster.name}' "
        f"(hold {index} did not fit; short by {total - available} SU)",
        required=total,
        available=available,
        index=index,
    )
