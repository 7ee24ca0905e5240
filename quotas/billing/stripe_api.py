"""The one place that talks to Stripe: a StripeClient built from settings at call time.

STRIPE_API_BASE points the client at another host (the local Stripe server of the test
suite, stripe-mock); empty means api.stripe.com. Settings are read per call, never at import.
"""

from __future__ import annotations

from functools import lru_cache

import stripe
from django.conf import settings

from quotas.billing.exceptions import BillingDisabled


def billing_enabled() -> bool:
    """Billing is on when a Stripe secret key is configured."""
    return bool(settings.STRIPE_SECRET_KEY)


def webhooks_enabled() -> bool:
    return bool(settings.STRIPE_WEBHOOK_SECRET)


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    # No automatic network retries: every POST we make is idempotent by our own key or
    # identifier and is retried by our tasks, so a failure surfaces instead of sleeping here.
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=0,
    )


def stripe_client() -> stripe.StripeClient:
    """A client for the configured account, or BillingDisabled when no key is set."""
    if not billing_enabled():
        raise BillingDisabled("Billing is off: no Stripe keys are configured on this portal")
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def is_transient(exc: stripe.StripeError) -> bool:
    """Whether retrying the same request later may succeed (network, 5xx, rate limit, lock)."""
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if isinstance(exc, stripe.APIError):
        return True
    status = getattr(exc, "http_status", None) or 0
    return status >= 500 or status in (409, 429)


def is_duplicate_identifier(exc: stripe.StripeError) -> bool:
    """Stripe refuses a meter event whose identifier it already holds: it was delivered."""
    if not isinstance(exc, stripe.InvalidRequestError):
        return False
    code = (getattr(exc, "code", None) or "").lower()
    return code == "duplicate_meter_event" or "already exists with identifier" in str(
        getattr(exc, "user_message", None) or exc
    )
