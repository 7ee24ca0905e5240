"""Billing pages (namespace "billing"), the Stripe webhook and the API (under /api/v1/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from portal.routing import under
from quotas.billing import api, views

_pages: list[URLPattern | URLResolver] = [
    path("billing/", views.billing_home, name="home"),
    under(
        "billing/<uuid:org_uuid>/",
        path("", views.billing_page, name="page"),
        path("checkout/", views.billing_checkout, name="checkout"),
    ),
    path("billing/stripe/webhook/", views.stripe_webhook, name="stripe-webhook"),
]

urlpatterns: list[URLPattern | URLResolver] = [path("", include((_pages, "billing")))]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("billing/packs/", api.PackListView.as_view(), name="api-billing-packs"),
    path("billing/checkout/", api.CheckoutView.as_view(), name="api-billing-checkout"),
    path(
        "billing/organizations/",
        api.BillingOrganizationListView.as_view(),
        name="api-billing-organization-list",
    ),
    under(
        "billing/organizations/<str:uuid>/",
        path(
            "",
            api.BillingOrganizationDetailView.as_view(),
            name="api-billing-organization-detail",
        ),
        path("invoices/", api.InvoiceListView.as_view(), name="api-billing-invoice-list"),
    ),
]
