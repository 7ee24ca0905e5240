"""The ledger: allocations' SU move only through these services, each in one transaction with
its entry under the allocation's row lock (rules in quotas/models.py's docstring).

    amounts      what an amount of SU may be
    posting      entries and the counters they move, row locks, active <-> exhausted
    holds        liens placed before work runs (one, or a submission's worth)
    settlement   charging a hold and releasing the rest (one, or thousands per statement)
    direct       charging work that ran without a hold
    adjustments  credits, refunds, staff adjustments and system debits
    thresholds   the PI's usage emails
"""

from quotas.services.ledger.adjustments import (
    ledger_adjust,
    ledger_credit,
    ledger_debit,
    ledger_refund,
)
from quotas.services.ledger.direct import (
    DirectCharge,
    ledger_charge_direct,
    ledger_charge_direct_many,
)
from quotas.services.ledger.holds import (
    eligible_allocations,
    hold_ctes,
    ledger_hold,
    ledger_hold_many,
    placed_hold,
)
from quotas.services.ledger.settlement import SettledHold, ledger_settle, ledger_settle_many
from quotas.services.ledger.thresholds import THRESHOLDS, usage_percent

__all__ = [
    "THRESHOLDS",
    "DirectCharge",
    "SettledHold",
    "eligible_allocations",
    "hold_ctes",
    "ledger_adjust",
    "ledger_charge_direct",
    "ledger_charge_direct_many",
    "ledger_credit",
    "ledger_debit",
    "ledger_hold",
    "ledger_hold_many",
    "ledger_refund",
    "ledger_settle",
    "ledger_settle_many",
    "placed_hold",
    "usage_percent",
]
