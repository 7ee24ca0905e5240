"""The one ledger movement billing needs that quotas does not offer: a system debit.

quotas.services.ledger_adjust debits only for facility admins; a Stripe refund is a system
action with no person behind it. The debit is an `expire` entry (credited -= amount) made
with the same pattern as quotas' own services: row lock on the allocation, the entry and the
counters in one transaction, an idempotency key.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models import F

from quotas.models import ZERO, Allocation, LedgerEntry


@transaction.atomic
def ledger_debit_unspent(
    *, allocation: Allocation, amount: Decimal, key: str, memo: str
) -> tuple[Decimal, LedgerEntry | None]:
    """Take up to `amount` SU of what is still available; returns (debited, entry).

    Same key -> the first entry again. Held and charged SU are never touched.
    """
    if existing := LedgerEntry.objects.filter(idempotency_key=key).first():
        return existing.amount, existing
    locked = Allocation.objects.select_for_update().get(pk=allocation.pk)
    debit = min(amount, max(locked.available, ZERO))
    if debit <= 0:
        return ZERO, None
    entry = LedgerEntry.objects.create(
        allocation=locked,
        kind=LedgerEntry.Kind.EXPIRE,
        amount=debit,
        idempotency_key=key,
        actor=None,
        memo=memo[:500],
    )
    Allocation.objects.filter(pk=locked.pk).update(credited=F("credited") - debit)
    allocation.credited = locked.credited - debit
    allocation.held, allocation.charged = locked.held, locked.charged
    return debit, entry
