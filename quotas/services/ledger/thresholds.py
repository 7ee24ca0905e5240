"""Usage thresholds: the PI is emailed once when charges cross 80 % and 100 % of the credit."""

from __future__ import annotations

from decimal import Decimal

from quotas import notifications
from quotas.models import ZERO, Allocation

# Usage thresholds (percent of credited charged) that email the PI once each.
THRESHOLDS = (80, 100)


def usage_percent(allocation: Allocation) -> Decimal:
    """Charged as a percentage of credited (0 when nothing was credited)."""
    if allocation.credited <= 0:
        return ZERO
    return allocation.charged * 100 / allocation.credited


def notify_thresholds(allocation: Allocation) -> None:
    """After a charge: email the PI once for each threshold the usage has now crossed.

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


def rearm_thresholds(allocation: Allocation) -> None:
    """After new SU arrive, a threshold the usage fell back under may notify again."""
    used = usage_percent(allocation)
    keep = [n for n in allocation.notified if not (n.isdigit() and used < int(n))]
    if keep != allocation.notified:
        allocation.notified = keep
        Allocation.objects.filter(pk=allocation.pk).update(notified=keep)
