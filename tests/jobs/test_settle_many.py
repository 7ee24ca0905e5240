"""ledger_settle_many settles each hold exactly as ledger_settle does, once."""

from __future__ import annotations

from decimal import Decimal

from quotas.models import Hold, LedgerEntry
from quotas.reconcile import reconcile_ledger
from quotas.services import ledger_hold, ledger_settle, ledger_settle_many


def _entries(key: str) -> list[tuple[str, Decimal, str]]:
    return list(
        LedgerEntry.objects.filter(hold__key=key)
        .exclude(kind="hold")
        .order_by("kind")
        .values_list("kind", "amount", "idempotency_key")
    )


def test_settling_many_holds_matches_settling_each_and_is_idempotent(tenant, cluster, allocation):
    holds = [
        ledger_hold(
            actor=None, project=tenant.project, cluster=cluster, amount=Decimal("10"), key=f"h{i}"
        )
        for i in range(4)
    ]
    ledger_settle(actor=None, hold=holds[0], actual=Decimal("3.5"))
    actuals = [Decimal("3.5"), Decimal("0"), Decimal("12"), Decimal("10")]

    result = ledger_settle_many(actor=None, settlements=list(zip(holds, actuals, strict=True)))
    again = ledger_settle_many(actor=None, settlements=list(zip(holds, actuals, strict=True)))

    assert [result[h.pk].charged for h in holds] == [3.5, 0, 10, 10]
    assert [again[h.pk].released for h in holds] == [6.5, 10, 0, 0]
    assert _entries("h1") == [("release", Decimal("10.0000"), "h1:release")]
    assert _entries("h2") == [("charge", Decimal("10.0000"), "h2:charge")]
    assert LedgerEntry.objects.filter(kind="charge").count() == 3
    allocation.refresh_from_db()
    assert (allocation.held, allocation.charged) == (0, Decimal("23.5"))
    assert not Hold.objects.filter(state=Hold.State.OPEN).exists()
    assert reconcile_ledger().ok
