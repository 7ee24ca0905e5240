from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from jobs.selectors import access_requests_for_user, job_list_for_user
from portal.celery import app as celery_app
from portal.users import acting_user
from quotas.models import Allocation, LedgerEntry
from quotas.selectors import allocations_for_user

USAGE_DAYS = 30


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Balances per allocation, recent jobs and SU charged per day over the last 30 days."""
    allocations = list(
        allocations_for_user(request.user)
        .filter(status=Allocation.Status.ACTIVE)
        .order_by("ends_at", "id")[:50]
    )
    since = (timezone.now() - timedelta(days=USAGE_DAYS - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    per_day = {
        row["day"]: row["total"]
        for row in LedgerEntry.objects.filter(
            kind=LedgerEntry.Kind.CHARGE,
            allocation__in=allocations_for_user(request.user),
            created_at__gte=since,
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=Sum("amount"))
    }
    days = [(since + timedelta(days=i)).date() for i in range(USAGE_DAYS)]
    chart = {
        "labels": [d.isoformat() for d in days],
        "values": [float(per_day.get(d, 0)) for d in days],  # display only, not money math
    }
    return render(
        request,
        "portal/dashboard.html",
        {
            "allocations": allocations,
            "recent_jobs": list(job_list_for_user(user=acting_user(request))[:10]),
            # The caller's own cluster access requests (staff see theirs here, not everyone's).
            "access_requests": list(
                access_requests_for_user(user=acting_user(request)).filter(
                    user=acting_user(request)
                )[:5]
            ),
            "chart": chart,
            "charged_30d": sum(per_day.values()),
        },
    )


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and readiness: the database answers a query and the broker accepts a connection."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "error", "checks": checks},
        status=HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
    )
