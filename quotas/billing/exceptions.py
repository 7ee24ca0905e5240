from __future__ import annotations

from http import HTTPStatus

from portal.errors import DomainError, PermissionDenied


class BillingDisabled(DomainError):
    """No Stripe keys are configured: nothing can be bought or reported."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "billing_disabled"


class InvalidCheckout(DomainError):
    """A checkout request names an unknown pack, a bad quantity or a foreign project."""

    code = "invalid"


class StripeUnavailable(DomainError):
    """Stripe could not be reached or refused the call; the caller may try again."""

    status = HTTPStatus.BAD_GATEWAY
    code = "stripe_unavailable"


class InvalidWebhook(DomainError):
    """The webhook body or its Stripe-Signature header does not verify."""

    code = "invalid_webhook"


class InvalidPlan(DomainError):
    code = "invalid"


class NotBillingManager(PermissionDenied):
    code = "not_billing_manager"
