from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

from portal.errors import Conflict, DomainError, PermissionDenied


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


class InsufficientQuotaForBatch(InsufficientQuota):
    """A batch of holds does not all fit (nothing was held): required/available are the whole
    batch's, `index` is the first hold that found no allocation able to cover it."""

    def __init__(self, detail: str, *, required: Decimal, available: Decimal, index: int) -> None:
        super().__init__(detail, required=required, available=available)
        self.index = index


class InvalidAmount(DomainError):
    code = "invalid_amount"


class NoRate(DomainError):
    code = "no_rate"


class AllocationStateError(Conflict):
    code = "allocation_state"


class RequestStateError(Conflict):
    code = "request_state"


class AllocationSuspended(DomainError):
    """Only suspended allocations could cover the amount; carries their reason."""

    status = HTTPStatus.PAYMENT_REQUIRED
    code = "allocation_suspended"


class InvalidRequest(DomainError):
    """A grant request (or allocation) field is invalid; `field` names it."""

    code = "invalid"


class NotReviewer(PermissionDenied):
    code = "not_reviewer"


class SelfReview(PermissionDenied):
    code = "self_review"


class ConflictOfInterest(PermissionDenied):
    """The reviewer belongs to the requesting organization or project."""

    code = "conflict_of_interest"


class NotProjectManager(PermissionDenied):
    code = "not_project_manager"


class NotFacilityAdmin(PermissionDenied):
    code = "not_facility_admin"


class TrialUnavailable(DomainError):
    """This organization cannot start a trial (not a company, or trials are switched off)."""

    code = "trial_unavailable"


class TrialAlreadyUsed(Conflict):
    """The organization already had its one trial."""

    code = "trial_already_used"


class EmailNotVerified(PermissionDenied):
    code = "email_not_verified"
