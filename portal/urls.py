from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import urls as accounts_urls
from jobs import urls as jobs_urls
from portal import views
from quotas import urls as quotas_urls
from quotas.billing import urls as billing_urls

api_v1 = [
    *accounts_urls.api_urlpatterns,
    *quotas_urls.api_urlpatterns,
    *billing_urls.api_urlpatterns,
    *jobs_urls.api_urlpatterns,
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("allauth.urls")),
    path("", include(accounts_urls.urlpatterns)),
    path("", include(quotas_urls.urlpatterns)),
    path("", include(billing_urls.urlpatterns)),
    path("", include(jobs_urls.urlpatterns)),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("django-admin/", admin.site.urls),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

# Under /api/ every error answers the API's JSON error shape, in production too.
handler400 = "portal.handlers.bad_request"
handler403 = "portal.handlers.permission_denied"
handler404 = "portal.handlers.page_not_found"
handler500 = "portal.handlers.server_error"
