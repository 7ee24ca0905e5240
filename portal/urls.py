from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import urls as accounts_urls
from jobs import urls as jobs_urls
from portal import views
from quotas import urls as quotas_urls
from quotas.billing import urls as billing_urls

# The admin's own login form takes a password alone (no MFA, no rate limit, no verified email):
# send it through allauth's sign-in like every other login. Non-staff get 403.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

api_v1 = [
    *accounts_urls.api_urlpatterns,
    *quotas_urls.api_urlpatterns,
    *billing_urls.api_urlpatterns,
    *jobs_urls.api_urlpatterns,
]

urlpatterns = [
    # First: scripts poll the API, and Django tries the patterns in order (no page's pattern
    # starts with api/, so the order changes no answer).
    path("api/v1/", include(api_v1)),
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("allauth.urls")),
    path("", include(accounts_urls.urlpatterns)),
    path("", include(quotas_urls.urlpatterns)),
    path("", include(billing_urls.urlpatterns)),
    path("", include(jobs_urls.urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file (?script=): no inline script.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", template_name="portal/swagger_ui.html"
        ),
        name="api-docs",
    ),
    path("django-admin/", admin.site.urls),
]

# MEDIA_ROOT has no URL, in development as in production: uploads are private and served only
# by views that check the caller (e.g. quotas' allocation request document views).

# Under /api/ every error answers the API's JSON error shape, in production too.
handler400 = "portal.handlers.bad_request"
handler403 = "portal.handlers.permission_denied"
handler404 = "portal.handlers.page_not_found"
handler500 = "portal.handlers.server_error"
