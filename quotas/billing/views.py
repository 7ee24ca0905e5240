"""Billing pages (owners and billing members only; others get 404) and the Stripe webhook."""

from __future__ import annotations

import logging
from http import HTTPStatus

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.selectors import organizations_for_user
from portal.errors import DomainError, NotFound
from portal.users import acting_user
from quotas.billing import selectors
from quotas.billing.services import checkout_start, webhook_receive
from quotas.billing.stripe_api import billing_enabled
from quotas.services.trials import trial_refusal

logger = logging.getLogger(__name__)


@login_required
@require_GET
def billing_home(request: HttpRequest) -> HttpResponse:
    """The billing page of the user's organization, a list when they manage several, and what
    to do when they manage none (never a 404: the link is shared and bookmarked)."""
    orgs = list(selectors.billing_organizations_for_user(request.user).order_by("name"))
    if len(orgs) == 1:
        return redirect("billing:page", org_uuid=orgs[0].uuid)
    member_of = [] if orgs else [o.name for o in organizations_for_user(request.user)]
    return render(request, "billing/home.html", {"organizations": orgs, "member_of": member_of})


@login_required
@require_GET
def billing_page(request: HttpRequest, org_uuid: str) -> HttpResponse:
    try:
        org = selectors.billing_organization_get_for_user(request.user, org_uuid)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    checkout = request.GET.get("checkout")
    if checkout == "success":
        messages.success(request, "Thank you: the SU are credited as soon as Stripe confirms it.")
    elif checkout == "cancelled":
        messages.info(request, "The checkout was cancelled; nothing was charged.")
    return render(
        request,
        "billing/page.html",
        {
            "view": selectors.billing_overview(org),
            "billing_on": billing_enabled(),
            # The trial is offered where SU are bought, to those who may start it.
            "trial_open": trial_refusal(actor=acting_user(request), organization=org) is None,
        },
    )


@login_required
@require_POST
def billing_checkout(request: HttpRequest, org_uuid: str) -> HttpResponse:
    """The buy button: open a Stripe Checkout and send the browser there."""
    try:
        purchase = checkout_start(
            actor=acting_user(request),
            organization=org_uuid,
            pack=request.POST.get("pack"),
            quantity=request.POST.get("quantity", "1"),
            project=request.POST.get("project"),
        )
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("billing:page", org_uuid=org_uuid)
    return redirect(purchase.checkout_url, permanent=False)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe events: 400 unless the signature verifies; stored once, processed by a task."""
    try:
        event, created = webhook_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except DomainError as exc:
        logger.warning("Refused a Stripe webhook: %s", exc.detail)
        return JsonResponse(exc.as_dict(), status=HTTPStatus.BAD_REQUEST)
    return JsonResponse({"received": True, "id": event.stripe_id, "duplicate": not created})
