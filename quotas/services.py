"""Writes on rates, allocations and the ledger. Every counter change is made in the same
transaction as its ledger entry, under a row lock on the allocation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Project, User
from quotas.exceptions import InsufficientQuota, InvalidAmount, NoRate
from quotas.models import ZERO, Allocation, Cluster, Hold, LedgerEntry, Rate

QUANTUM = Decimal("0.0001")
HOUR = Decimal(3600)

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


def su(value: Decimal | int | str) -> Decimal:
    """Round an amount of service units to the ledger's precision (4 places, half up)."""
    return Decimal(value).quantize(QUANTUM, rounding=ROUND_HALF_UP)


# --- rates and estimates -------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Resources used (or requested) for a duration: the input of every cost computation."""

    seconds: int
    gpus: int = 0
    gpu_type: str = ""
    cpus: int = 1
    memory_mb: int = 0
    tasks: int = 1


@dataclass(frozen=True)
class CostLine:
    resource: str
    quantity: Decimal  # units of the rate (GPU-hours, CPU-hours, GB-hours)
    rate: Decimal
    cost: Decimal


@dataclass(frozen=True)
class Cost:
    total: Decimal
    breakdown: list[CostLine] = field(default_factory=list)


def rates_at(*, cluster: Cluster, at: datetime | None = None) -> dict[tuple[str, str], Decimal]:
    """The rates in force on a cluster at a moment, keyed by (resource, gpu_type): one query."""
    at = at or timezone.now()
    current: dict[tuple[str, str], Decimal] = {}
    for rate in Rate.objects.filter(cluster=cluster, effective_from__lte=at).order_by(
        "resource", "gpu_type", "-effective_from"
    ):
        current.setdefault((rate.resource, rate.gpu_type), rate.su_per_unit)
    return current


def cost_of(
    *,
    cluster: Cluster,
    usage: Usage,
    at: datetime | None = None,
    rates: dict[tuple[str, str], Decimal] | None = None,
) -> Cost:
    """SU for `usage` on `cluster` at the rates in force at `at` (rate × quantity × hours)."""
    rates = rates if rates is not None else rates_at(cluster=cluster, at=at)
    hours = Decimal(usage.seconds) / HOUR
    tasks = Decimal(usage.tasks)
    lines: list[CostLine] = []
    if usage.gpus:
        gpu_rate = rates.get(("gpu_hour", usage.gpu_type)) or rates.get(("gpu_hour", ""))
        if gpu_rate is None:
            raise NoRate(
                f"Cluster {cluster.name} has no GPU-hour rate for GPU type "
                f"'{usage.gpu_type or 'default'}'",
                field="gpu_type",
            )
        qty = Decimal(usage.gpus) * hours * tasks
        lines.append(
            CostLine(
                f"gpu_hour:{usage.gpu_type}" if usage.gpu_type else "gpu_hour",
                qty,
                gpu_rate,
                qty * gpu_rate,
            )
        )
    if usage.cpus and (cpu_rate := rates.get(("cpu_hour", ""))) is not None:
        qty = Decimal(usage.cpus) * hours * tasks
        lines.append(CostLine("cpu_hour", qty, cpu_rate, qty * cpu_rate))
    if usage.memory_mb and (mem_rate := rates.get(("mem_gb_hour", ""))) is not None:
        qty = Decimal(usage.memory_mb) / Decimal(1024) * hours * tasks
        lines.append(CostLine("mem_gb_hour", qty, mem_rate, qty * mem_rate))
    total = su(sum((line.cost for line in lines), ZERO))
    return Cost(
        total=total,
        breakdown=[
            CostLine(ln.resource, ln.quantity.quantize(QUANTUM), ln.rate, su(ln.cost))
            for ln in lines
        ],
    )


def estimate(
    *,
    cluster: Cluster,
    gpus: int,
    gpu_type: str,
    cpus: int,
    memory_mb: int,
    time_limit_minutes: int,
    tasks: int = 1,
    at: datetime | None = None,
) -> Cost:
    """The most a job can cost: rates × requested resources × time limit × array tasks."""
    usage = Usage(
        seconds=time_limit_minutes * 60,
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=cpus,
        memory_mb=memory_mb,
        tasks=tasks,
    )
    return cost_of(cluster=cluster, usage=usage, at=at)


# --- the ledger ------------------------------------------------------------------------


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
) -> LedgerEntry:
    """Append one entry and move the allocation's counters by it. Caller holds the row lock."""
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
    )
    Allocation.objects.filter(pk=allocation.pk).update(
        credited=F("credited") + c * amount,
        held=F("held") + h * amount,
        charged=F("charged") + ch * amount,
    )
    allocation.credited += c * amount
    allocation.held += h * amount
    allocation.charged += ch * amount
    return entry


def _positive(amount: Decimal | int | str, *, name: str = "amount") -> Decimal:
    try:
        value = su(amount)
    except (ArithmeticError, ValueError, TypeError):
        raise InvalidAmount(f"{name} must be a number of service units", field=name) from None
    if not value.is_finite() or value <= 0:
        raise InvalidAmount(f"{name} must be greater than zero", field=name)
    return value


def _locked(allocation: Allocation) -> Allocation:
    return Allocation.objects.select_for_update().get(pk=allocation.pk)


@transaction.atomic
def ledger_credit(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str = "",
) -> LedgerEntry:
    """Add SU to an allocation. A second call with the same key returns the first entry."""
    value = _positive(amount)
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    entry = _post(
        locked, kind=LedgerEntry.Kind.CREDIT, amount=value, key=key, actor=actor, memo=memo
    )
    _sync_counters(allocation, locked)
    return entry


def eligible_allocations(
    *, project: Project, cluster: Cluster, at: datetime | None = None
) -> Iterable[Allocation]:
    """Active allocations of `project` valid on `cluster` now, earliest-ending first."""
    at = at or timezone.now()
    return Allocation.objects.filter(
        project=project,
        clusters=cluster,
        status=Allocation.Status.ACTIVE,
        starts_at__lte=at,
        ends_at__gt=at,
    ).order_by("ends_at", "id")


@transaction.atomic
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

    Raises InsufficientQuota (with the shortfall) when none can. Same key -> same hold.
    """
    value = _positive(amount)
    if existing := Hold.objects.filter(key=key).first():
        return existing
    ids = list(eligible_allocations(project=project, cluster=cluster).values_list("pk", flat=True))
    # Lock in one consistent order (ends_at, id) so concurrent holds never deadlock.
    candidates = list(
        Allocation.objects.select_for_update().filter(pk__in=ids).order_by("ends_at", "id")
    )
    best = max((a.available for a in candidates), default=ZERO)
    chosen = next((a for a in candidates if a.available >= value), None)
    if chosen is None:
        raise InsufficientQuota(
            f"Insufficient quota: this job needs {value} SU but project '{project.name}' has "
            f"at most {best} SU available on one allocation for cluster '{cluster.name}' "
            f"(short by {value - best} SU)",
            required=value,
            available=best,
        )
    try:
        with transaction.atomic():
            hold = Hold.objects.create(allocation=chosen, amount=value, key=key, job_uuid=job_uuid)
    except IntegrityError:
        return Hold.objects.get(key=key)
    _post(
        chosen,
        kind=LedgerEntry.Kind.HOLD,
        amount=value,
        key=f"{key}:hold",
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
        hold=hold,
    )
    return hold


@transaction.atomic
def ledger_settle(*, actor: User | None, hold: Hold, actual: Decimal, memo: str = "") -> Hold:
    """Charge min(actual, held) out of the hold and release the rest, exactly once.

    Settling an already settled hold changes nothing and returns it.
    """
    locked_hold = Hold.objects.select_for_update().get(pk=hold.pk)
    if locked_hold.state == Hold.State.SETTLED:
        return locked_hold
    actual_value = su(actual)
    if actual_value < 0:
        raise InvalidAmount("actual must not be negative", field="actual")
    allocation = _locked(locked_hold.allocation)
    charge = min(actual_value, locked_hold.amount)
    release = locked_hold.amount - charge
    if charge > 0:
        _post(
            allocation,
            kind=LedgerEntry.Kind.CHARGE,
            amount=charge,
            key=f"{locked_hold.key}:charge",
            actor=actor,
            memo=memo,
            job_uuid=locked_hold.job_uuid,
            hold=locked_hold,
        )
    if release > 0:
        _post(
            allocation,
            kind=LedgerEntry.Kind.RELEASE,
            amount=release,
            key=f"{locked_hold.key}:release",
            actor=actor,
            memo=memo,
            job_uuid=locked_hold.job_uuid,
            hold=locked_hold,
        )
        if allocation.status == Allocation.Status.EXPIRED:
            # The allocation expired while this hold was open: what comes back expires too.
            _post(
                allocation,
                kind=LedgerEntry.Kind.EXPIRE,
                amount=release,
                key=f"{locked_hold.key}:expire",
                actor=actor,
                memo="Released after the allocation expired",
                job_uuid=locked_hold.job_uuid,
            )
    locked_hold.charged = charge
    locked_hold.released = release
    locked_hold.state = Hold.State.SETTLED
    locked_hold.settled_at = timezone.now()
    locked_hold.save(update_fields=["charged", "released", "state", "settled_at"])
    _after_charge(allocation)
    return locked_hold


@transaction.atomic
def ledger_refund(
    *,
    actor: User | None,
    allocation: Allocation,
    amount: Decimal,
    key: str,
    memo: str,
    job_uuid: uuid.UUID | None = None,
) -> LedgerEntry:
    """Give back SU that were charged (at most what was charged). Same key -> same entry."""
    value = _positive(amount)
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    if value > locked.charged:
        raise InvalidAmount(
            f"Cannot refund {value} SU: only {locked.charged} SU were charged", field="amount"
        )
    entry = _post(
        locked,
        kind=LedgerEntry.Kind.REFUND,
        amount=value,
        key=key,
        actor=actor,
        memo=memo,
        job_uuid=job_uuid,
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
    """Staff credit (+) or debit (-) with a memo; a debit never takes `available` below 0."""
    if not actor.is_staff:
        from portal.errors import PermissionDenied

        raise PermissionDenied("Only facility staff may adjust allocations")
    if not memo.strip():
        raise InvalidAmount("A memo is required for an adjustment", field="memo")
    try:
        value = su(amount)
    except (ArithmeticError, ValueError, TypeError):
        raise InvalidAmount("amount must be a number of service units", field="amount") from None
    if not value.is_finite() or value == 0:
        raise InvalidAmount("amount must be a non-zero number", field="amount")
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing
    locked = _locked(allocation)
    if value < 0 and -value > locked.available:
        raise InvalidAmount(
            f"Cannot debit {-value} SU: only {locked.available} SU are available", field="amount"
        )
    entry = _post(
        locked, kind=LedgerEntry.Kind.ADJUSTMENT, amount=value, key=key, actor=actor, memo=memo
    )
    _sync_counters(allocation, locked)
    return entry


def _sync_counters(target: Allocation, source: Allocation) -> None:
    target.credited, target.held, target.charged = source.credited, source.held, source.charged


def _after_charge(allocation: Allocation) -> None:
    """Hook for usage thresholds (80 %/100 %) and exhaustion; see quotas.notifications."""
