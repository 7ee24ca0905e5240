"""Proof that the ledger holds: counters equal ledger sums, holds match their entries, and no
hold is orphaned. Used by `manage.py reconcile_ledger`, its nightly task and the tests.

Orphaned holds: quotas never imports jobs, so whoever owns holds registers a checker:

    from quotas.reconcile import register_hold_owner_check
    register_hold_owner_check(my_check)  # e.g. in JobsConfig.ready()

A checker takes a list of open Hold rows and returns {hold.pk: "why it is orphaned"} for those
whose owner is finished. A dotted path in settings.QUOTAS_HOLD_OWNER_CHECK works as well. With
no checker, open holds older than settings.QUOTAS_STALE_HOLD_DAYS days are reported instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string

from quotas.models import EFFECTS, ZERO, Allocation, Hold, LedgerEntry, su

HoldOwnerCheck = Callable[[Sequence[Hold]], Mapping[int, str]]
_checks: list[HoldOwnerCheck] = []
_CHUNK = 1000


def register_hold_owner_check(check: HoldOwnerCheck) -> None:
    """Register a function telling which open holds belong to finished owners (idempotent)."""
    if check not in _checks:
        _checks.append(check)


def unregister_hold_owner_check(check: HoldOwnerCheck) -> None:
    if check in _checks:
        _checks.remove(check)


def hold_owner_checks() -> list[HoldOwnerCheck]:
    checks = list(_checks)
    if path := getattr(settings, "QUOTAS_HOLD_OWNER_CHECK", ""):
        checks.append(import_string(path))
    return checks


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.subject}: {self.detail}"


@dataclass
class ReconcileReport:
    allocations: int = 0
    holds: int = 0
    entries: int = 0
    open_holds: int = 0
    owner_checked: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} PROBLEM(S)"
        return (
            f"Ledger {state}: {self.allocations} allocations, {self.entries} entries, "
            f"{self.holds} holds ({self.open_holds} open)"
        )

    def format(self) -> str:
        lines = [self.summary()]
        if not self.owner_checked:
            lines.append("(no hold owner check registered: open holds judged by age)")
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def reconcile_ledger(
    *, now: datetime | None = None, stale_hold_days: int | None = None
) -> ReconcileReport:
    """Check every invariant of quotas/models.py's docstring; a report with what is off."""
    now = now or timezone.now()
    fresh = not connection.in_atomic_block
    with transaction.atomic():
        if fresh and connection.vendor == "postgresql":
            # One snapshot for every query, so concurrent holds cannot look like drift.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _reconcile(now=now, stale_hold_days=stale_hold_days)


def _reconcile(*, now: datetime, stale_hold_days: int | None) -> ReconcileReport:
    report = ReconcileReport(
        allocations=Allocation.objects.count(),
        holds=Hold.objects.count(),
        entries=LedgerEntry.objects.count(),
        open_holds=Hold.objects.filter(state=Hold.State.OPEN).count(),
    )
    _check_counters(report)
    _check_holds(report)
    _check_orphans(report, now=now, stale_hold_days=stale_hold_days)
    return report


def _check_counters(report: ReconcileReport) -> None:
    sums: dict[int, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO, ZERO])
    # Sums at the ledger's precision (su): exact already on PostgreSQL; SQLite, the development
    # default, adds in floating point (2.1100000000000003).
    for row in LedgerEntry.objects.values("allocation_id", "kind").annotate(total=Sum("amount")):
        effect = EFFECTS[row["kind"]]
        for i in range(3):
            sums[row["allocation_id"]][i] += effect[i] * su(row["total"])
    open_held = {
        pk: su(total)
        for pk, total in Hold.objects.filter(state=Hold.State.OPEN)
        .values("allocation_id")
        .annotate(total=Sum("amount"))
        .values_list("allocation_id", "total")
    }
    for alloc in Allocation.objects.only(
        "id", "uuid", "status", "credited", "held", "charged"
    ).iterator(chunk_size=2000):
        name = f"allocation {alloc.uuid}"
        credited, held, charged = sums.get(alloc.pk, [ZERO, ZERO, ZERO])
        for label, counter, total in (
            ("credited", alloc.credited, credited),
            ("held", alloc.held, held),
            ("charged", alloc.charged, charged),
        ):
            if counter != total:
                report.problems.append(
                    Problem("counter", name, f"{label} is {counter} but the ledger says {total}")
                )
        if alloc.held != open_held.get(alloc.pk, ZERO):
            report.problems.append(
                Problem(
                    "held",
                    name,
                    f"held is {alloc.held} but its open holds add up to "
                    f"{open_held.get(alloc.pk, ZERO)}",
                )
            )
        if alloc.available < 0:
            report.problems.append(Problem("overspent", name, f"available is {alloc.available}"))
        if alloc.status == Allocation.Status.EXPIRED and alloc.available != 0:
            report.problems.append(
                Problem("expired", name, f"expired but {alloc.available} SU are available")
            )


def _kind_sum(kind: str) -> Coalesce:
    return Coalesce(Sum("entries__amount", filter=Q(entries__kind=kind)), Value(ZERO))


def _hold_is_off(
    state: str, amount: Decimal, charged: Decimal, released: Decimal, *entries: Decimal
) -> bool:
    e_hold, e_charge, e_release = (su(e) for e in entries)
    return (
        e_hold != amount
        or e_charge != charged
        or e_release != released
        or (state == Hold.State.SETTLED and amount != charged + released)
        or (state == Hold.State.OPEN and (charged != 0 or released != 0))
    )


def _check_holds(report: ReconcileReport) -> None:
    holds = Hold.objects.annotate(
        e_hold=_kind_sum(LedgerEntry.Kind.HOLD),
        e_charge=_kind_sum(LedgerEntry.Kind.CHARGE),
        e_release=_kind_sum(LedgerEntry.Kind.RELEASE),
    )
    if connection.vendor == "postgresql":
        # Exact numeric sums: the database picks the holds that are off.
        holds = holds.filter(
            ~Q(e_hold=F("amount"))
            | ~Q(e_charge=F("charged"))
            | ~Q(e_release=F("released"))
            | Q(state=Hold.State.SETTLED) & ~Q(amount=F("charged") + F("released"))
            | Q(state=Hold.State.OPEN) & (~Q(charged=0) | ~Q(released=0))
        )
    rows = holds.values_list(
        "key", "state", "amount", "charged", "released", "e_hold", "e_charge", "e_release"
    )
    if connection.vendor == "postgresql":
        bad = list(rows)
    else:
        # Every hold is read and checked here, at the ledger's precision.
        bad = [row for row in rows.iterator(chunk_size=2000) if _hold_is_off(*row[1:])]
    for key, state, amount, charged, released, e_hold, e_charge, e_release in bad:
        report.problems.append(
            Problem(
                "hold",
                f"hold {key}",
                f"{state} hold of {amount} (charged {charged}, released {released}) has entries "
                f"hold {e_hold}, charge {e_charge}, release {e_release}",
            )
        )
    misplaced = LedgerEntry.objects.filter(hold__isnull=False).exclude(
        allocation_id=F("hold__allocation_id")
    )
    for key in misplaced.values_list("idempotency_key", flat=True)[:100]:
        report.problems.append(
            Problem("hold", f"entry {key}", "is on another allocation than its hold")
        )


def _check_orphans(report: ReconcileReport, *, now: datetime, stale_hold_days: int | None) -> None:
    checks = hold_owner_checks()
    open_holds = Hold.objects.filter(state=Hold.State.OPEN).order_by("id")
    if checks:
        report.owner_checked = True
        last = 0
        while chunk := list(open_holds.filter(id__gt=last)[:_CHUNK]):
            last = chunk[-1].pk
            by_pk = {h.pk: h for h in chunk}
            for check in checks:
                for pk, why in check(chunk).items():
                    hold = by_pk.get(pk)
                    if hold is not None:
                        report.problems.append(
                            Problem("orphan", f"hold {hold.key}", f"open, but {why}")
                        )
        return
    days = stale_hold_days if stale_hold_days is not None else settings.QUOTAS_STALE_HOLD_DAYS
    cutoff = now - timedelta(days=days)
    for key, created_at, amount in open_holds.filter(created_at__lt=cutoff).values_list(
        "key", "created_at", "amount"
    ):
        report.problems.append(
            Problem(
                "stale",
                f"hold {key}",
                f"open for more than {days} days ({amount} SU since {created_at:%Y-%m-%d})",
            )
        )
