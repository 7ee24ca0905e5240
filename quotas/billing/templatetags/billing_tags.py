"""`{% billing_nav %}`: the Billing link, for users who manage some organization's billing."""

from __future__ import annotations

from typing import Any

from django import template

from quotas.billing.selectors import can_manage_billing

register = template.Library()


@register.inclusion_tag("billing/_nav_link.html", takes_context=True)
def billing_nav(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"show": bool(user is not None and can_manage_billing(user))}


# Stripe amounts are in the currency's minor unit; these currencies have none.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                "vnd", "vuv", "xaf", "xof", "xpf"}  # fmt: skip


@register.filter
def money(amount: int | None, currency: str = "") -> str:
    """`1234|money:"eur"` -> "12.34 EUR"."""
    if amount is None:
        return "—"
    code = (currency or "").lower()
    if code in ZERO_DECIMAL:
        text = f"{amount:,}"
    else:
        sign = "-" if amount < 0 else ""
        text = f"{sign}{abs(amount) // 100:,}.{abs(amount) % 100:02d}"
    return f"{text} {code.upper()}".strip()
