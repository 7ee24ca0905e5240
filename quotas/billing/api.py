"""REST API of billing: checkout, and each organization's billing for its owners and billing
members (everyone else gets 404). Thin: parse, one service or selector, render."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Organization
from portal.api import CursorPagination, OptionalURLField, StrictFieldsMixin
from portal.users import acting_user
from quotas.billing import selectors
from quotas.billing.models import Invoice, Purchase, SuPack
from quotas.billing.services import checkout_start
from quotas.billing.stripe_api import billing_enabled


class PackSerializer(serializers.ModelSerializer[SuPack]):
    class Meta:
        model = SuPack
        fields = [
            "id",
            "slug",
            "name",
            "su_amount",
            "price_display",
            "description",
            "validity_days",
        ]
        read_only_fields = fields


class CheckoutSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    pack = serializers.CharField(max_length=80, help_text="SU pack id or slug")
    quantity = serializers.JSONField(help_text="Number of packs, 1 to 100")
    project = serializers.UUIDField(help_text="Project (of the organization) credited")
    organization = serializers.UUIDField(
        required=False, help_text="Defaults to the only organization whose billing you manage"
    )


class CheckoutResponseSerializer(serializers.Serializer[Any]):
    url = serializers.URLField()
    purchase = serializers.UUIDField()


class PurchaseSerializer(serializers.ModelSerializer[Purchase]):
    id = serializers.UUIDField(source="uuid", read_only=True)
    pack = serializers.CharField(source="pack.slug", read_only=True)
    project = serializers.UUIDField(source="project.uuid", read_only=True)
    allocation = serializers.UUIDField(source="allocation.uuid", read_only=True, allow_null=True)

    class Meta:
        model = Purchase
        fields = [
            "id",
            "pack",
            "quantity",
            "su_amount",
            "project",
            "status",
            "amount_total",
            "amount_refunded",
            "currency",
            "allocation",
            "su_reversed",
            "created_at",
            "credited_at",
        ]
        read_only_fields = fields


class InvoiceSerializer(serializers.ModelSerializer[Invoice]):
    id = serializers.CharField(source="stripe_id", read_only=True)
    hosted_invoice_url = OptionalURLField()
    invoice_pdf = OptionalURLField()

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "currency",
            "amount_due",
            "amount_paid",
            "amount_remaining",
            "period_start",
            "period_end",
            "hosted_invoice_url",
            "invoice_pdf",
            "paid_at",
            "first_payment_failed_at",
            "stripe_created",
        ]
        read_only_fields = fields


class OrganizationBillingSerializer(serializers.Serializer[Any]):
    organization = serializers.UUIDField()
    name = serializers.CharField()
    billing_enabled = serializers.BooleanField()
    stripe_customer_id = serializers.CharField(allow_null=True)
    suspended = serializers.BooleanField()
    postpaid = serializers.DictField(allow_null=True)
    owed_su = serializers.DecimalField(max_digits=18, decimal_places=4)
    purchases = PurchaseSerializer(many=True)
    invoices = InvoiceSerializer(many=True)


def _overview(org: Organization) -> dict[str, Any]:
    view = selectors.billing_overview(org, limit=20)
    usage = view.postpaid
    return {
        "organization": org.uuid,
        "name": org.name,
        "billing_enabled": billing_enabled(),
        "stripe_customer_id": view.account.stripe_customer_id if view.account else None,
        "suspended": bool(view.account and view.account.is_suspended),
        "postpaid": None
        if usage is None
        else {
            "active": usage.plan.active,
            "project": str(usage.plan.project.uuid),
            "credit_limit": str(usage.credit_limit),
            "charged": str(usage.charged),
            "held": str(usage.held),
            "available": str(usage.available),
            "reported": str(usage.reported),
            "status": usage.allocation.status if usage.allocation else None,
        },
        "owed_su": sum((s.su_amount for s in view.shortfalls), 0),
        "purchases": view.purchases,
        "invoices": view.invoices,
    }


class PackListView(generics.ListAPIView[SuPack]):
    """SU packs on sale."""

    serializer_class = PackSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[SuPack]:
        return selectors.active_packs()


class CheckoutView(APIView):
    """Start a Stripe Checkout for SU packs credited to a project; answers the Stripe URL."""

    @extend_schema(request=CheckoutSerializer, responses={201: CheckoutResponseSerializer})
    def post(self, request: Request) -> Response:
        serializer = CheckoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        purchase = checkout_start(
            actor=acting_user(request),
            pack=data["pack"],
            quantity=data["quantity"],
            project=data["project"],
            organization=data.get("organization"),
        )
        return Response({"url": purchase.checkout_url, "purchase": str(purchase.uuid)}, status=201)


class BillingOrganizationListView(APIView):
    """The billing of every organization whose billing the caller manages."""

    @extend_schema(responses=OrganizationBillingSerializer(many=True))
    def get(self, request: Request) -> Response:
        orgs = selectors.billing_organizations_for_user(request.user).order_by("name")
        return Response(
            OrganizationBillingSerializer([_overview(org) for org in orgs], many=True).data
        )


class BillingOrganizationDetailView(APIView):
    """One organization's billing: customer, post-paid plan, purchases, recent invoices."""

    @extend_schema(responses=OrganizationBillingSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        org = selectors.billing_organization_get_for_user(request.user, uuid)
        return Response(OrganizationBillingSerializer(_overview(org)).data)


class InvoicePagination(CursorPagination):
    ordering = ("-stripe_created", "-id")


class InvoiceListView(generics.ListAPIView[Invoice]):
    """An organization's invoices, newest first."""

    serializer_class = InvoiceSerializer
    pagination_class = InvoicePagination

    def get_queryset(self) -> QuerySet[Invoice]:
        org = selectors.billing_organization_get_for_user(self.request.user, self.kwargs["uuid"])
        return selectors.invoices_for_organization(org)
