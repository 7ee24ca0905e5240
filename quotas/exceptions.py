from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

from portal.errors import Conflict, DomainError


class InsufficientQuota(DomainError):
    """No eligible allocation can cover the amount; carries the shortfall in SU."""

    status = HTTPStatus.PAYMENT_REQUIRED
    code = "insufficient_quota"

    def __init__(self, detail: str, *, required: Decimal, available: Decimal) -> None:
        shortfall = required - available
        super().__init__(
            detail, required=str(required), available=str(available), shortfall=str(shortfall)
        )
        self.required = required
        self.available = available
        self.shortfall = shortfall


class InvalidAmount(DomainError):
    code = "invalid_amount"


class NoRate(DomainError):
    code = "no_rate"


class AllocationStateError(Conflict):
    code = "allocation_state"


class RequestStateError(Conflict):
    code = "request_state"
