"""Prepaid SU: Stripe Checkout, the purchase allocation credited exactly once, and refunds."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from stripe.params.checkout import SessionCreateParams

from accounts.models import Organization, Project, User
from portal.ids import as_uuid
from quotas import queue
from quotas.billing import selectors
from quotas.billing.exceptions import InvalidCheckout, StripeUnavailable
from quotas.billing.models import Purchase, RefundShortfall, StripeEvent, SuPack
from quotas.billing.services.accounts import billing_account_ensure_customer
from quotas.billing.stripe_api import stripe_client
from quotas.models import ZERO, Allocation, Cluster, su
from quotas.policy import cluster_refusal
from quotas.services.allocations import allocation_create
from quotas.services.ledger import ledger_credit, ledger_debit

logger = logging.getLogger(__name__)

MAX_QUANTITY = 100
PAID_STATES = ("paid", "no_payment_required")


def _pack_clusters(pack: SuPack, project: Project) -> list[Cluster]:
    """The clusters a pack's SU are valid on for this project (enabled, open to its org)."""
    chosen = list(pack.clusters.filter(enabled=True)) or list(Cluster.objects.filter(enabled=True))
    return [c for c in chosen if cluster_refusal(c, project) is None]


def checkout_start(
    *,
    actor: User,
    pack: Any,
    quantity: Any,
    project: Any,
    organization: Any = None,
) -> Purchase:
    """Open a Stripe Checkout for `quantity` packs credited to `project`; returns the purchase
    with its checkout URL. Everything is validated before Stripe is called.

    `organization` (uuid) defaults to the only organization whose billing the actor manages.
    Raises BillingDisabled, NotFound (organization), InvalidCheckout naming the field.
    """
    stripe_client()  # BillingDisabled first: nothing else matters without keys
    org = _checkout_organization(actor, organization)
    try:
        count = int(quantity)
    except (TypeError, ValueError):
        raise InvalidCheckout("quantity must be a whole number", field="quantity") from None
    if isinstance(quantity, bool) or str(quantity).strip() != str(count) or count < 1:
        raise InvalidCheckout("quantity must be a whole number of at least 1", field="quantity")
    if count > MAX_QUANTITY:
        raise InvalidCheckout(f"quantity must be at most {MAX_QUANTITY}", field="quantity")
    chosen_pack = selectors.pack_lookup(pack)
    if chosen_pack is None:
        raise InvalidCheckout(f"Unknown SU pack '{pack}'", field="pack")
    target = (
        selectors.billing_projects(org).filter(uuid=project).first() if as_uuid(project) else None
    )
    if target is None:
        raise InvalidCheckout(
            f"'{project}' is not an active project of organization '{org.name}'", field="project"
        )
    if not _pack_clusters(chosen_pack, target):
        raise InvalidCheckout(
            f"Pack '{chosen_pack.name}' is not valid on any cluster project '{target.name}' may "
            "use",
            field="pack",
        )

    account = billing_account_ensure_customer(organization=org)
    customer_id = account.stripe_customer_id
    if not customer_id:  # never: billing_account_ensure_customer sets it or raises
        raise StripeUnavailable("The organization has no Stripe customer")
    purchase_uuid = uuid.uuid4()
    page = settings.SITE_URL.rstrip("/") + reverse("billing:page", args=[org.uuid])
    metadata = {
        "purchase": str(purchase_uuid),
        "organization": str(org.uuid),
        "project": str(target.uuid),
        "pack": chosen_pack.slug,
        "quantity": str(count),
    }
    try:
        params: SessionCreateParams = {
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": str(purchase_uuid),
            "line_items": [{"price": chosen_pack.stripe_price_id, "quantity": count}],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": f"{page}?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{page}?checkout=cancelled",
        }
        session = stripe_client().v1.checkout.sessions.create(
            params=params,
            options={"idempotency_key": f"gpuc-checkout-{purchase_uuid}"},
        )
    except stripe.StripeError as exc:
        logger.warning("Stripe checkout creation failed for %s: %s", org.slug, exc)
        raise StripeUnavailable(f"Stripe did not open the checkout: {exc}") from exc
    data = session.to_dict()
    return Purchase.objects.create(
        uuid=purchase_uuid,
        organization=org,
        project=target,
        pack=chosen_pack,
        quantity=count,
        su_amount=chosen_pack.su_amount * count,
        created_by=actor,
        stripe_session_id=data["id"],
        checkout_url=data.get("url") or "",
        amount_total=data.get("amount_total"),
        currency=(data.get("currency") or "")[:3],
    )


def _checkout_organization(actor: User, organization: Any) -> Organization:
    if organization not in (None, ""):
        return selectors.billing_organization_get_for_user(actor, organization)
    orgs = list(selectors.billing_organizations_for_user(actor)[:2])
    if not orgs:
        from portal.errors import NotFound

        raise NotFound("You manage the billing of no organization")
    if len(orgs) > 1:
        raise InvalidCheckout(
            "You manage the billing of several organizations: name one", field="organization"
        )
    return orgs[0]


# --- webhooks: checkout.session.* ------------------------------------------------------


def checkout_session_fetch(session_id: str) -> dict[str, Any] | None:
    """The session as Stripe has it now, or None when Stripe cannot be asked."""
    try:
        return stripe_client().v1.checkout.sessions.retrieve(session_id).to_dict()
    except stripe.StripeError as exc:
        logger.info("Could not re-fetch checkout session %s: %s", session_id, exc)
        return None


def _purchase_from_metadata(session: dict[str, Any]) -> Purchase | None:
    """The purchase for a session the portal opened but has no row for (lost after the call)."""
    meta = session.get("metadata") or {}
    org_uuid = as_uuid(meta.get("organization"))
    project_uuid = as_uuid(meta.get("project"))
    org = Organization.objects.filter(uuid=org_uuid).first() if org_uuid else None
    pack = SuPack.objects.filter(slug=meta.get("pack") or "").first()
    project = (
        Project.objects.filter(uuid=project_uuid, organization=org).first()
        if org and project_uuid
        else None
    )
    try:
        quantity = int(meta.get("quantity") or 0)
    except ValueError:
        quantity = 0
    purchase_uuid = as_uuid(meta.get("purchase") or session.get("client_reference_id"))
    if not (org and pack and project and quantity > 0 and purchase_uuid):
        return None
    try:
        with transaction.atomic():
            return Purchase.objects.create(
                uuid=purchase_uuid,
                organization=org,
                project=project,
                pack=pack,
                quantity=quantity,
                su_amount=pack.su_amount * quantity,
                stripe_session_id=session["id"],
            )
    except IntegrityError:
        return Purchase.objects.filter(stripe_session_id=session["id"]).first()


@transaction.atomic
def checkout_session_apply(*, session: dict[str, Any], event_type: str = "") -> Purchase | None:
    """Bring a purchase up to date with a Checkout Session snapshot.

    Paid (or nothing to pay) and complete -> a purchase allocation credited exactly once
    (ledger key derived from the session id). A purchase never leaves `paid`, so snapshots
    may arrive in any order and any number of times. None when the session is not ours.
    """
    session_id = session.get("id") or ""
    known = Purchase.objects.filter(stripe_session_id=session_id).exists()
    if not known and _purchase_from_metadata(session) is None:
        return None
    purchase = Purchase.objects.select_for_update().get(stripe_session_id=session_id)
    fields: set[str] = set()
    intent = session.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    if intent and not purchase.stripe_payment_intent_id:
        purchase.stripe_payment_intent_id = intent
        fields.add("stripe_payment_intent_id")
    if session.get("amount_total") is not None and purchase.amount_total is None:
        purchase.amount_total = session["amount_total"]
        purchase.currency = (session.get("currency") or "")[:3]
        fields |= {"amount_total", "currency"}

    paid = session.get("status") == "complete" and session.get("payment_status") in PAID_STATES
    if purchase.status != Purchase.Status.PAID:
        if paid:
            _credit(purchase)
            fields |= {"status", "allocation", "credited_at"}
            if purchase.stripe_payment_intent_id:
                intent_id = purchase.stripe_payment_intent_id
                transaction.on_commit(lambda: _wake_deferred(intent_id))
        elif event_type == "checkout.session.async_payment_failed":
            purchase.status = Purchase.Status.FAILED
            fields.add("status")
        elif session.get("status") == "expired" and purchase.status == Purchase.Status.OPEN:
            purchase.status = Purchase.Status.EXPIRED
            fields.add("status")
        elif session.get("status") == "complete" and purchase.status == Purchase.Status.OPEN:
            purchase.status = Purchase.Status.AWAITING_PAYMENT
            fields.add("status")
    if fields:
        purchase.save(update_fields=[*sorted(fields), "updated_at"])
    return purchase


def _credit(purchase: Purchase) -> None:
    """Create the purchase allocation and credit it (caller holds the purchase row lock)."""
    now = timezone.now()
    ends_at = now + timedelta(days=purchase.pack.validity_days)
    memo = (
        f"Purchase of {purchase.quantity} × {purchase.pack.name} "
        f"(Stripe {purchase.stripe_session_id})"
    )
    key = f"stripe-checkout:{purchase.stripe_session_id}"
    clusters = _pack_clusters(purchase.pack, purchase.project)
    if clusters:
        allocation = allocation_create(
            actor=None,
            project=purchase.project,
            kind=Allocation.Kind.PURCHASE,
            clusters=clusters,
            starts_at=now,
            ends_at=ends_at,
            amount=purchase.su_amount,
            memo=memo,
            key=key,
        )
    else:
        # Paid money must land somewhere even if its clusters closed since the checkout:
        # credit it on the pack's clusters and let facility staff move it.
        allocation = Allocation.objects.create(
            project=purchase.project,
            kind=Allocation.Kind.PURCHASE,
            starts_at=now,
            ends_at=ends_at,
            memo=memo[:500],
        )
        allocation.clusters.set(purchase.pack.clusters.all())
        ledger_credit(
            actor=None, allocation=allocation, amount=purchase.su_amount, key=key, memo=memo
        )
    purchase.allocation = allocation
    purchase.status = Purchase.Status.PAID
    purchase.credited_at = now


def _wake_deferred(payment_intent: str) -> None:
    queue.process_stripe_events(
        StripeEvent.objects.filter(
            related_id=payment_intent, status=StripeEvent.Status.DEFERRED
        ).values_list("stripe_id", flat=True)
    )


# --- webhooks: charge.refunded ---------------------------------------------------------


@transaction.atomic
def charge_refund_apply(*, charge: dict[str, Any]) -> Purchase | None:
    """Take back the SU a refund paid for: what is still unspent is debited from the purchase
    allocation, the rest is recorded as owed (RefundShortfall).

    Stripe reports the cumulative `amount_refunded`, so the highest one seen is the state:
    replays and out-of-order deliveries change nothing. None when the charge is not (yet) a
    credited purchase's.
    """
    intent = charge.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    if not intent:
        return None
    purchase = (
        Purchase.objects.select_for_update()
        .filter(stripe_payment_intent_id=intent, status=Purchase.Status.PAID)
        .first()
    )
    if purchase is None or purchase.allocation is None:
        return None
    charged = int(charge.get("amount") or 0)
    refunded = max(int(charge.get("amount_refunded") or 0), purchase.amount_refunded)
    if charged <= 0 or refunded <= purchase.amount_refunded:
        return purchase
    if refunded >= charged:
        target = purchase.su_amount
    else:
        target = su(purchase.su_amount * Decimal(refunded) / Decimal(charged))
    shortfall = RefundShortfall.objects.select_for_update().filter(purchase=purchase).first()
    owed_before = shortfall.su_amount if shortfall else ZERO
    delta = target - purchase.su_reversed - owed_before
    if delta > 0:
        entry = ledger_debit(
            actor=None,
            allocation=purchase.allocation,
            amount=delta,
            key=f"stripe-refund:{purchase.stripe_session_id}:{refunded}",
            memo=f"Refunded by Stripe (charge {charge.get('id', '?')})",
        )
        debited = entry.amount if entry else ZERO
        purchase.su_reversed += debited
        if (owed := delta - debited) > 0:
            if shortfall is None:
                shortfall = RefundShortfall(
                    purchase=purchase, organization_id=purchase.organization_id
                )
            shortfall.su_amount = owed_before + owed
            shortfall.amount = int(
                (Decimal(charged) * shortfall.su_amount / purchase.su_amount).quantize(
                    Decimal(1), rounding=ROUND_HALF_UP
                )
            )
            shortfall.currency = (charge.get("currency") or purchase.currency or "")[:3]
            shortfall.save()
    purchase.amount_refunded = refunded
    purchase.save(update_fields=["amount_refunded", "su_reversed", "updated_at"])
    return purchase
