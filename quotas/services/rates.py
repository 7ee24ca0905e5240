"""Rates with effective dates and the one cost function: `estimate` for holds and displays,
`cost_of` for charges. A new rate applies from its date on; past charges never change."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from quotas.exceptions import InvalidAmount, InvalidRequest, NoRate
from quotas.models import QUANTUM, ZERO, Cluster, Rate, su
from quotas.policy import is_facility_admin

HOUR = Decimal(3600)
# A rate may take effect "now": allow for the seconds between the form and the save.
_BACKDATE_TOLERANCE = timedelta(minutes=5)
_MAX_RATE = Decimal("1e8")  # Rate.su_per_unit holds 14 digits, 6 of them decimals


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


Rates = dict[tuple[str, str], Decimal]


class RateTable:
    """A cluster's rates, every effective date; the one answer to "which rates were in force
    at time t" (rates_at, the per-process cache behind cached_rates_at, job sync's pricing of
    thousands of jobs that started at different moments)."""

    def __init__(self, rows: list[tuple[str, str, datetime, Decimal]]) -> None:
        # (resource, gpu_type, effective_from, su_per_unit), newest first per resource.
        self.rows = rows

    @classmethod
    def load(cls, *, cluster: Cluster, at: datetime | None = None) -> RateTable:
        """One query: the cluster's rates (only those in force by `at`, if given)."""
        rates = Rate.objects.filter(cluster=cluster)
        if at is not None:
            rates = rates.filter(effective_from__lte=at)
        return cls(
            list(
                rates.order_by("resource", "gpu_type", "-effective_from").values_list(
                    "resource", "gpu_type", "effective_from", "su_per_unit"
                )
            )
        )

    def at(self, when: datetime) -> Rates:
        """The rates in force at `when`, keyed by (resource, gpu_type): the latest of each
        that took effect by then."""
        current: Rates = {}
        for resource, gpu_type, effective_from, su_per_unit in self.rows:
            if effective_from <= when:
                current.setdefault((resource, gpu_type), su_per_unit)
        return current


def rates_at(*, cluster: Cluster, at: datetime | None = None) -> Rates:
    """The rates in force on a cluster at a moment, keyed by (resource, gpu_type): one query."""
    at = at or timezone.now()
    return RateTable.load(cluster=cluster, at=at).at(at)


# Rates change rarely, and every submission prices its job: each process keeps a cluster's
# whole rate table (every effective date) for a few seconds and picks the rates in force at the
# moment asked, so a rate scheduled for later applies from its date on. rate_create clears
# this process's copy when it commits; other processes see a new rate within RATES_TTL seconds
# (a rate cannot take effect in the past, and one scheduled "now" is backdated by at most
# _BACKDATE_TOLERANCE anyway).
RATES_TTL = 2.0
_tables: dict[int, tuple[float, RateTable]] = {}


def cached_rates_at(*, cluster: Cluster, at: datetime | None = None) -> Rates:
    """rates_at from this process's copy of the cluster's rate table (at most RATES_TTL old)."""
    now = time.monotonic()
    cached = _tables.get(cluster.pk)
    if cached is None or cached[0] < now:
        _tables[cluster.pk] = cached = (now + RATES_TTL, RateTable.load(cluster=cluster))
    return cached[1].at(at or timezone.now())


def forget_cached_rates() -> None:
    _tables.clear()


def cost_of(
    *,
    cluster: Cluster,
    usage: Usage,
    at: datetime | None = None,
    rates: Rates | None = None,
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


@transaction.atomic
def rate_create(
    *,
    actor: User | None,
    cluster: Cluster,
    resource: str,
    su_per_unit: Decimal | str,
    gpu_type: str = "",
    effective_from: datetime | None = None,
) -> Rate:
    """Schedule a rate from `effective_from` (default now) on; it can never be backdated.

    A new rate supersedes the previous one for the same resource from its date on, so charges
    computed at earlier moments never change. `actor` None is the system (data loading).
    """
    if actor is not None and not is_facility_admin(actor):
        from quotas.exceptions import NotFacilityAdmin

        raise NotFacilityAdmin("Only facility admins may set rates")
    if resource not in Rate.Resource.values:
        raise InvalidRequest(
            f"resource must be one of {', '.join(Rate.Resource.values)}", field="resource"
        )
    if gpu_type and resource != Rate.Resource.GPU_HOUR:
        raise InvalidRequest("gpu_type applies to GPU-hour rates only", field="gpu_type")
    try:
        value = Decimal(su_per_unit)
    except (InvalidOperation, ValueError, TypeError):
        raise InvalidAmount("su_per_unit must be a number", field="su_per_unit") from None
    if not value.is_finite() or value < 0 or value >= _MAX_RATE:
        raise InvalidAmount(
            "su_per_unit must be a number from 0 up to 100,000,000", field="su_per_unit"
        )
    now = timezone.now()
    when = effective_from or now
    if when < now - _BACKDATE_TOLERANCE:
        raise InvalidRequest(
            "A rate cannot take effect in the past: past charges never change",
            field="effective_from",
        )
    rate = Rate(
        cluster=cluster,
        resource=resource,
        gpu_type=gpu_type,
        su_per_unit=value.quantize(Decimal("0.000001")),
        effective_from=when,
    )
    if actor is not None:
        rate._history_user = actor
    try:
        with transaction.atomic():
            rate.save()
    except IntegrityError:
        raise InvalidRequest(
            "A rate for this resource already takes effect at that moment",
            field="effective_from",
        ) from None
    # Now, for the rest of this transaction, and again at commit, for reads made meanwhile.
    forget_cached_rates()
    transaction.on_commit(forget_cached_rates)
    return rate
