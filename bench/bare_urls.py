"""One bare DRF view for bench/api.py: 50 static items, no authentication, no permission, no
throttle, no database. Not part of the product."""

from __future__ import annotations

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

ITEMS = [
    {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "name": f"item-{i}",
        "state": "completed",
        "gpus": i % 9,
        "created_at": "2026-01-01T00:00:00Z",
        "cost": "1.5000",
    }
    for i in range(50)
]


class BareView(APIView):
    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    def get(self, request: Request) -> Response:
        return Response({"results": ITEMS})


urlpatterns = [path("bare/", BareView.as_view())]
