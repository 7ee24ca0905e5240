"""Amounts of SU as the ledger accepts them: numbers at its precision, finite, in range."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from quotas.exceptions import InvalidAmount
from quotas.models import su

MAX_SU = Decimal("1e13")  # the counters hold 18 digits with 4 decimals


def su_amount(amount: Decimal | int | str, *, name: str) -> Decimal:
    """`amount` at the ledger's precision, or InvalidAmount naming `name`: any sign."""
    try:
        value = su(amount)
    except (ArithmeticError, ValueError, TypeError, InvalidOperation):
        raise InvalidAmount(f"{name} must be a number of service units", field=name) from None
    if not value.is_finite() or abs(value) >= MAX_SU:
        raise InvalidAmount(f"{name} must be a finite number below 1e13", field=name)
    return value


def positive_amount(amount: Decimal | int | str, *, name: str = "amount") -> Decimal:
    """su_amount, greater than zero (credits, holds, refunds, grant requests)."""
    value = su_amount(amount, name=name)
    if value <= 0:
        raise InvalidAmount(f"{name} must be greater than zero", field=name)
    return value


def actual_amount(actual: Decimal | int | str) -> Decimal:
    """su_amount of what work actually cost: zero or more."""
    value = su_amount(actual, name="actual")
    if value < 0:
        raise InvalidAmount("actual must not be negative", field="actual")
    return value
