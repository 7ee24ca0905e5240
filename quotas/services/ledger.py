"""The ledger: every counter change is made in the same transaction as its entry, under a row
lock on the allocation. Rules are in quotas/models.py's docstring; reconcile proves them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounts.models import Project, User
from quotas import notifications
from quotas.exceptions import (
    AllocationStateError,
    AllocationSuspended,
    InsufficientQuota,
    InsufficientQuotaForBatch,
    InvalidAmount,
    NotFacilityAdmin,
)
from quotas.models import ZERO, Allocation, Cluster, Hold, LedgerEntry
from quotas.policy import is_facility_admin
from quotas.services.rates import su

# kind -> (credited, held, charged) multipliers applied to the entry's amount.
_EFFECTS: dict[str, tuple[int, int, int]] = {
    LedgerEntry.Kind.CREDIT: (1, 0, 0),
    LedgerEntry.Kind.HOLD: (0, 1, 0),
    LedgerEntry.Kind.RELEASE: (0, -1, 0),
    LedgerEntry.Kind.CHARGE: (0, -1, 1),
    LedgerEntry.Kind.REFUND: (0, 0, -1),
    LedgerEntry.Kind.EXPIRE: (-1, 0, 0),
    LedgerEntry.Kind.ADJUSTMENT: (1, 0, 0),
}
# Usage thresholds (percent of credited charged) that email the PI once each.
THRESHOLDS = (80, 100)
_MAX_SU = Decimal("1e13")  # the counters hold 18 digits with 4 decimals


def _post(
    allocation: Allocation,
    *,
    kind: str,
    amount: Decimal,
    key: str,
    actor: User | None,
    memo: str = "",
    job_uuid: uuid.UUID | None = None,
    hold: Hold | None = None,
    cluster: Cluster | None = None,
) -> LedgerEntry:
    """Append one entry and move the allocation's counters by it. Caller holds the row lock.

    Also moves an active allocation to `exhausted` when nothing is left and nothing is held,
    and back to `active` when SU come back.
    """
    c, h, ch = _EFFECTS[kind]
    entry = LedgerEntry.objects.create(
        allocation=allocation,
        kind=kind,
        amount=amount,
        idempotency_key=key,
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
        hold=hold,
        cluster=cluster,
    )
    Allocation.objects.filter(pk=allocation.pk).update(
        credited=F("credited") + c * amount,
        held=F("held") + h * amount,
        charged=F("charged") + ch * amount,
    )
    allocation.credited += c * amount
    allocation.held += h * amount
    allocation.charged += ch * amount
    if kind != LedgerEntry.Kind.EXPIRE:
        _refresh_status(allocation, actor=actor)
    return entry


def _post_many(
    allocation: Allocation, entries: list[LedgerEntry], *, actor: User | None
) -> list[LedgerEntry]:
    """Append several entries at once and move the counters by their sum in one UPDATE.

    Same rules and lock as _post: the caller holds the allocation's row lock.
    """
    if not entries:
        return []
    deltas = [ZERO, ZERO, ZERO]
    for entry in entries:
        for i, factor in enumerate(_EFFECTS[entry.kind]):
            deltas[i] += factor * entry.amount
    created = LedgerEntry.objects.bulk_create(entries)
    _move_counters(allocation, *deltas, actor=actor)
    return created


def _move_counters(
    allocation: Allocation,
    credited: Decimal,
    held: Decimal,
    charged: Decimal,
    *,
    actor: User | None,
) -> None:
    """Move the counters of the locked `allocation` by these deltas in one UPDATE and refresh
    its status. Only for entries the caller writes in the same transaction (_post_many, and
    ledger_settle_many, which inserts its entries as plain values)."""
    Allocation.objects.filter(pk=allocation.pk).update(
        credited=F("credited") + credited,
        held=F("held") + held,
        charged=F("charged") + charged,
    )
    allocation.credited += credited
    allocation.held += held
    allocation.charged += charged
    _refresh_status(allocation, actor=actor)


def _refresh_status(allocation: Allocation, *, actor: User | None) -> None:
    """active <-> exhausted from the (locked, current) counters; other statuses are left alone."""
    if allocation.status not in (Allocation.Status.ACTIVE, Allocation.Status.EXHAUSTED):
        return
    empty = allocation.available <= 0 and allocation.held <= 0 and allocation.credited > 0
    wanted = Allocation.Status.EXHAUSTED if empty else Allocation.Status.ACTIVE
    if wanted != allocation.status:
        allocation.status = wanted
        if actor is not None:
            allocation._history_user = actor  # type: ignore[attr-defined]
        allocation.save(update_fields=["status"])


def _post_once(allocation: Allocation, **kwargs: object) -> tuple[LedgerEntry, bool]:
    """_post, or the entry already stored under the same key (a concurrent duplicate)."""
    try:
        with transaction.atomic():
            return _post(allocation, **kwargs), True  # type: ignore[arg-type]
    except IntegrityError:
        existing = LedgerEntry.objects.filter(idempotency_key=kwargs["key"]).first()
        if existing is None:
            raise
        return existing, False


def _number(amount: Decimal | int | str, *, name: str) -> Decimal:
    try:
        value = su(amount)
    except (ArithmeticError, ValueError, TypeError, InvalidOperation):
        raise InvalidAmount(f"{name} must be a number of service units", field=name) from None
    if not value.is_finite() or abs(value) >= _MAX_SU:
        raise InvalidAmount(f"{name} must be a finite number below 1e13", field=name)
    return value


def _positive(amount: Decimal | int | str, *, name: str = "amount") -> Decimal:
    value = _number(amount, name=name)
    if value <= 0:
        raise InvalidAmount(f"{name} must be greater than zero", field=name)
    return value


def _locked(allocation: Allocation) -> Allocation:
    # NO KEY UPDATE: enough to change counters, and it does not block other transactions'
    # inserts that merely reference the allocation (ledger entries, holds).
    return Allocation.objects.select_for_update(no_key=True).get(pk=allocation.pk)


def _sync_counters(target: Allocation, source: Allocation) -> None:
    target.credited, target.held, target.charged = source.credited, source.held, source.charged
    target.status, target.notified = source.status, source.notified


def _refuse_expired(allocation: Allocation, what: str) -> None:
    if allocation.status == Allocation.Status.EXPIRED:
        raise AllocationStateError(
            f"Cannot {what} allocation {allocation.uuid}: it is expired (extend it first)",
            state=allocation.status,
        )


@transaction.atomic
def ledger_credit(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str = "",
) -> LedgerEntry:
    """Add SU to an allocation. A second call with the same key returns the first entry.

    An expired allocation refuses credits (409); an exhausted one becomes active again.
    """
    value = _positive(amount)
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    _refuse_expired(locked, "credit")
    entry, created = _post_once(
        locked, kind=LedgerEntry.Kind.CREDIT, amount=value, key=key, actor=actor, memo=memo
    )
    if created:
        _rearm_thresholds(locked)
    _sync_counters(allocation, locked)
    return entry


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
    value = _positive(amount)
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
    now = timezone.now()
    if connection.vendor == "postgresql":
        fast = _place_hold_one_statement(
            actor=actor,
            project=project,
            cluster=cluster,
            value=value,
            key=key,
            job_uuid=job_uuid,
            memo=memo,
            now=now,
        )
        if fast is not None:
            return fast
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
    hold = Hold.objects.create(
        allocation_id=chosen.pk, cluster=cluster, amount=value, key=key, job_uuid=job_uuid
    )
    LedgerEntry.objects.create(
        allocation_id=chosen.pk,
        kind=LedgerEntry.Kind.HOLD,
        amount=value,
        idempotency_key=f"{key}:hold",
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
        hold=hold,
        cluster=cluster,
    )
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
    """The common case of _place_hold in ONE round trip (PostgreSQL): the same conditional
    UPDATE of the earliest-ending active allocation that covers `value` (re-checked on the
    row's current version, so the last SU is never taken twice), the hold and its ledger entry
    inserted by the same statement. None when no row was updated (nothing covers it, or a
    concurrent hold took the balance): the caller then walks the candidates one by one and
    explains a refusal."""
    allocations, link = Allocation._meta.db_table, Allocation.clusters.through._meta.db_table
    holds, entries = Hold._meta.db_table, LedgerEntry._meta.db_table
    sql = f"""
        WITH chosen AS (
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
            RETURNING id
        ), hold AS (
            INSERT INTO {holds} (allocation_id, cluster_id, amount, charged, released, state,
                                 job_uuid, key, created_at, settled_at)
            SELECT id, %(cluster)s, %(value)s, 0, 0, %(open)s, %(job_uuid)s, %(key)s, %(now)s,
                   NULL
            FROM chosen
            RETURNING id, allocation_id
        ), entry AS (
            INSERT INTO {entries} (allocation_id, kind, amount, cluster_id, hold_id, actor_id,
                                   memo, job_uuid, idempotency_key, created_at)
            SELECT allocation_id, %(kind)s, %(value)s, %(cluster)s, id, %(actor)s, %(memo)s,
                   %(job_uuid)s, %(entry_key)s, %(now)s
            FROM hold
        )
        SELECT id, allocation_id FROM hold
    """  # noqa: S608 (table names from the models; every value is a parameter)
    params: dict[str, Any] = {
        "value": value,
        "project": project.pk,
        "cluster": cluster.pk,
        "active": Allocation.Status.ACTIVE.value,
        "now": now,
        "open": Hold.State.OPEN.value,
        "job_uuid": job_uuid,
        "key": key,
        "kind": LedgerEntry.Kind.HOLD.value,
        "actor": actor.pk if actor is not None else None,
        "memo": memo,
        "entry_key": f"{key}:hold",
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    hold = Hold(
        pk=row[0],
        allocation_id=row[1],
        cluster=cluster,
        amount=value,
        key=key,
        job_uuid=job_uuid,
        created_at=now,
    )
    hold._state.adding = False
    hold._state.db = connection.alias
    return hold


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
    items = [(_positive(amount), key, job_uuid, memo) for amount, key, job_uuid, memo in holds]
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
    placed = Hold.objects.bulk_create(
        Hold(
            allocation=allocation,
            cluster=cluster,
            amount=value,
            key=key,
            job_uuid=job_uuid,
            created_at=now,
        )
        for allocation, (value, key, job_uuid, _memo) in zip(chosen, items, strict=True)
    )
    entries: dict[int, list[LedgerEntry]] = {a.pk: [] for a in allocations}
    for hold, (value, key, job_uuid, memo) in zip(placed, items, strict=True):
        entries[hold.allocation_id].append(
            LedgerEntry(
                allocation=hold.allocation,
                kind=LedgerEntry.Kind.HOLD,
                amount=value,
                idempotency_key=f"{key}:hold",
                actor=actor,
                memo=memo,
                job_uuid=job_uuid,
                hold=hold,
                cluster=cluster,
                created_at=now,
            )
        )
    for allocation in allocations:
        _post_many(allocation, entries[allocation.pk], actor=actor)
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


def _actual(actual: Decimal | int | str) -> Decimal:
    value = _number(actual, name="actual")
    if value < 0:
        raise InvalidAmount("actual must not be negative", field="actual")
    return value


def _settle_parts(
    amount: Decimal, actual: Decimal, *, expired: bool, memo: str
) -> tuple[Decimal, Decimal, list[tuple[str, Decimal, str]]]:
    """What settling a hold of `amount` at `actual` writes: (charge, release, the entries as
    (kind, amount, memo), none of zero). The charge is at most the hold; on an allocation that
    expired while the hold was open, what comes back expires at once (it was never available).
    The entries' keys are "<hold key>:<kind>"."""
    charge = min(actual, amount)
    release = amount - charge
    parts = [(LedgerEntry.Kind.CHARGE, charge, memo), (LedgerEntry.Kind.RELEASE, release, memo)]
    if expired:
        parts.append((LedgerEntry.Kind.EXPIRE, release, "Released after the allocation expired"))
    return charge, release, [(str(kind), value, text) for kind, value, text in parts if value > 0]


def _settlement(
    allocation: Allocation, hold: Hold, actual: Decimal, *, actor: User | None, memo: str
) -> tuple[Decimal, Decimal, list[LedgerEntry]]:
    """_settle_parts of `hold` as LedgerEntry instances: (charge, release, entries)."""
    charge, release, parts = _settle_parts(
        hold.amount, actual, expired=allocation.status == Allocation.Status.EXPIRED, memo=memo
    )
    entries = [
        LedgerEntry(
            allocation=allocation,
            kind=kind,
            amount=value,
            idempotency_key=f"{hold.key}:{kind}",
            actor=actor,
            memo=text,
            job_uuid=hold.job_uuid,
            hold=hold,
            cluster_id=hold.cluster_id,
        )
        for kind, value, text in parts
    ]
    return charge, release, entries


@transaction.atomic
def ledger_settle(*, actor: User | None, hold: Hold, actual: Decimal, memo: str = "") -> Hold:
    """Charge min(actual, held) out of the hold and release the rest, exactly once.

    Settling an already settled hold changes nothing and returns it. What is released on an
    allocation that expired while the hold was open expires at once (it was never available).
    """
    actual_value = _actual(actual)
    locked_hold = Hold.objects.select_for_update(no_key=True).get(pk=hold.pk)
    if locked_hold.state == Hold.State.SETTLED:
        return locked_hold
    allocation = _locked(Allocation(pk=locked_hold.allocation_id))
    charge, release, entries = _settlement(
        allocation, locked_hold, actual_value, actor=actor, memo=memo
    )
    _post_many(allocation, entries, actor=actor)
    locked_hold.charged = charge
    locked_hold.released = release
    locked_hold.state = Hold.State.SETTLED
    locked_hold.settled_at = timezone.now()
    locked_hold.save(update_fields=["charged", "released", "state", "settled_at"])
    hold.charged, hold.released, hold.state = charge, release, Hold.State.SETTLED
    hold.settled_at = locked_hold.settled_at
    if charge > 0:
        _after_charge(allocation)
    return locked_hold


@dataclass(frozen=True)
class DirectCharge:
    """What a direct charge did: `charged` out of `holds` (one settled hold per allocation it
    took from), `uncovered` the part of `amount` no allocation could cover."""

    amount: Decimal
    charged: Decimal
    uncovered: Decimal
    holds: tuple[Hold, ...]


# One direct charge: (project, amount, key, job uuid, memo).
DirectItem = tuple[Project, Decimal, str, "uuid.UUID | None", str]


def ledger_charge_direct(
    *,
    actor: User | None,
    project: Project,
    cluster: Cluster,
    amount: Decimal,
    key: str,
    job_uuid: uuid.UUID | None = None,
    memo: str = "",
) -> DirectCharge:
    """Charge work that ran without a hold (found in the scheduler's accounting) at once: a
    hold placed and settled in one transaction on each eligible allocation it takes from,
    earliest-ending first, never more than is available; the rest is returned as `uncovered`.
    Same key -> the first charge (its holds are keyed `key`, `key:2`, ...), even when racing."""
    return ledger_charge_direct_many(
        actor=actor, cluster=cluster, charges=[(project, amount, key, job_uuid, memo)]
    )[0]


@transaction.atomic
def ledger_charge_direct_many(
    *, actor: User | None, cluster: Cluster, charges: Sequence[DirectItem]
) -> list[DirectCharge]:
    """ledger_charge_direct for many charges on one cluster, in order, in a handful of
    statements whatever their number: the eligible allocations of all their projects are
    locked at once (in the order every multi-allocation writer takes them), each charge takes
    from its project's allocations earliest-ending first, and each allocation's counters move
    in one UPDATE. A charge under a key already used returns the first charge."""
    items = [
        (project, _actual(amount), key, job_uuid, memo)
        for project, amount, key, job_uuid, memo in charges
    ]
    if not items:
        return []
    now = timezone.now()
    link = Allocation.clusters.through
    allocations = list(
        Allocation.objects.select_for_update(no_key=True)
        .filter(
            project_id__in={project.pk for project, *_ in items},
            status=Allocation.Status.ACTIVE,
            starts_at__lte=now,
            ends_at__gt=now,
            pk__in=link.objects.filter(cluster=cluster).values("allocation_id"),
        )
        .order_by("ends_at", "id")
    )
    # Read after the locks: a concurrent call with the same keys has committed by now.
    done = set(
        Hold.objects.filter(key__in=[key for _, _, key, _, _ in items]).values_list(
            "key", flat=True
        )
    )
    left = {a.pk: a.available for a in allocations}
    holds: list[Hold] = []
    entries: dict[int, list[LedgerEntry]] = {a.pk: [] for a in allocations}
    out: list[DirectCharge | str] = []
    for project, value, key, job_uuid, memo in items:
        if key in done:
            out.append(key)
            continue
        done.add(key)  # a key repeated within the call charges once
        remaining = value
        mine: list[Hold] = []
        for allocation in allocations:
            take = min(remaining, left[allocation.pk])
            if allocation.project_id != project.pk or take <= 0:
                continue
            hold = Hold(
                allocation=allocation,
                cluster=cluster,
                amount=take,
                charged=take,
                released=ZERO,
                state=Hold.State.SETTLED,
                job_uuid=job_uuid,
                key=key if not mine else f"{key}:{len(mine) + 1}",
                created_at=now,
                settled_at=now,
            )
            # hold then charge: held goes up and down by `take` and charged up by it, so the
            # counters' rules and reconcile_ledger hold as for any settled hold.
            entries[allocation.pk] += [
                LedgerEntry(
                    allocation=allocation,
                    kind=kind,
                    amount=take,
                    idempotency_key=f"{hold.key}:{kind}",
                    actor=actor,
                    memo=memo,
                    job_uuid=job_uuid,
                    hold=hold,
                    cluster=cluster,
                    created_at=now,
                )
                for kind in (LedgerEntry.Kind.HOLD, LedgerEntry.Kind.CHARGE)
            ]
            left[allocation.pk] -= take
            remaining -= take
            mine.append(hold)
            if remaining <= 0:
                break
        holds += mine
        out.append(
            DirectCharge(
                amount=value, charged=value - remaining, uncovered=remaining, holds=tuple(mine)
            )
        )
    # The entries' hold ids are taken from the holds saved here (Django fills them in).
    Hold.objects.bulk_create(holds)
    for allocation in allocations:
        if entries[allocation.pk]:
            _post_many(allocation, entries[allocation.pk], actor=actor)
            _after_charge(allocation)
    return [
        result if isinstance(result, DirectCharge) else _direct_charge(result, items[i][1])
        for i, result in enumerate(out)
    ]


def _direct_charge(key: str, amount: Decimal) -> DirectCharge:
    """The charge already made under `key` (its first hold carries the key itself)."""
    holds: list[Hold] = []
    while more := Hold.objects.filter(key=key if not holds else f"{key}:{len(holds) + 1}").first():
        holds.append(more)
    charged = sum((h.charged for h in holds), ZERO)
    return DirectCharge(
        amount=amount, charged=charged, uncovered=max(amount - charged, ZERO), holds=tuple(holds)
    )


@transaction.atomic
def ledger_refund(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
    job_uuid: uuid.UUID | None = None,
    cluster: Cluster | None = None,
) -> LedgerEntry:
    """Give back SU that were charged (at most what was charged). Same key -> same entry.

    On an expired allocation the refunded SU expire at once.
    """
    value = _positive(amount)
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    if value > locked.charged:
        raise InvalidAmount(
            f"Cannot refund {value} SU: only {locked.charged} SU were charged", field="amount"
        )
    entry, created = _post_once(
        locked,
        kind=LedgerEntry.Kind.REFUND,
        amount=value,
        key=key,
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
        cluster=cluster,
    )
    if created and locked.status == Allocation.Status.EXPIRED:
        _post(
            locked,
            kind=LedgerEntry.Kind.EXPIRE,
            amount=value,
            key=f"{key}:expire",
            actor=actor,
            memo="Refunded after the allocation expired",
            job_uuid=job_uuid,
            cluster=cluster,
        )
    _sync_counters(allocation, locked)
    return entry


@transaction.atomic
def ledger_adjust(
    *,
    actor: User,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
) -> LedgerEntry:
    """Facility admin credit (+) or debit (-) with a memo; a debit never takes `available`
    below 0, and an expired allocation cannot be adjusted (extend it first)."""
    if not is_facility_admin(actor):
        raise NotFacilityAdmin("Only facility admins may adjust allocations")
    if not memo.strip():
        raise InvalidAmount("A memo is required for an adjustment", field="memo")
    value = _number(amount, name="amount")
    if value == 0:
        raise InvalidAmount("amount must be a non-zero number", field="amount")
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    _refuse_expired(locked, "adjust")
    if value < 0 and -value > locked.available:
        raise InvalidAmount(
            f"Cannot debit {-value} SU: only {locked.available} SU are available", field="amount"
        )
    entry, created = _post_once(
        locked, kind=LedgerEntry.Kind.ADJUSTMENT, amount=value, key=key, actor=actor, memo=memo
    )
    if created:
        if value > 0:
            _rearm_thresholds(locked)
        else:
            _after_charge(locked)
    _sync_counters(allocation, locked)
    return entry


@transaction.atomic
def ledger_debit(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
) -> LedgerEntry | None:
    """Take back up to `amount` SU of what is available (an `expire` entry): never below zero,
    held and charged SU untouched. None when nothing was available; same key -> same entry.

    A system action (a Stripe refund, a post-paid limit lowered), unlike ledger_adjust.
    """
    value = _number(amount, name="amount")
    if value < 0:
        raise InvalidAmount("amount must not be negative", field="amount")
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    debit = min(value, max(locked.available, ZERO))
    if debit <= 0:
        _sync_counters(allocation, locked)
        return None
    entry, _ = _post_once(
        locked,
        kind=LedgerEntry.Kind.EXPIRE,
        amount=debit,
        key=key,
        actor=actor,
        memo=memo[:500],
    )
    _sync_counters(allocation, locked)
    return entry


def usage_percent(allocation: Allocation) -> Decimal:
    """Charged as a percentage of credited (0 when nothing was credited)."""
    if allocation.credited <= 0:
        return ZERO
    return allocation.charged * 100 / allocation.credited


def _after_charge(allocation: Allocation) -> None:
    """Email the PI once when usage crosses 80 % and 100 % of what was credited.

    `allocation` is the locked row; the mail goes out only after the transaction commits.
    """
    if allocation.status == Allocation.Status.EXPIRED or allocation.credited <= 0:
        return
    used = usage_percent(allocation)
    crossed = [t for t in THRESHOLDS if str(t) not in allocation.notified and used >= t]
    if not crossed:
        return
    allocation.notified = [*allocation.notified, *(str(t) for t in crossed)]
    Allocation.objects.filter(pk=allocation.pk).update(notified=allocation.notified)
    notifications.usage_threshold(allocation=allocation, threshold=max(crossed), percent=used)


def _rearm_thresholds(allocation: Allocation) -> None:
    """After new SU arrive, a threshold the usage fell back under may notify again."""
    used = usage_percent(allocation)
    keep = [n for n in allocation.notified if not (n.isdigit() and used < int(n))]
    if keep != allocation.notified:
        allocation.notified = keep
        Allocation.objects.filter(pk=allocation.pk).update(notified=keep)
