"""The portal's URLs plus views that fail on purpose, for tests of the error handlers only
(used with @pytest.mark.urls). The handlers are the portal's own."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.urls import handler400, handler403, handler404, handler500, urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


class FailingApiView(APIView):
    def get(self, request: Request) -> Response:
        raise RuntimeError("boom in an API view")


def failing_page(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom in a page")


def forbidden_page(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("not for you")


urlpatterns = [
    path("api/v1/_test/boom/", FailingApiView.as_view()),
    path("_test/boom/", failing_page),
    path("_test/forbidden/", forbidden_page),
    *urlpatterns,
]
