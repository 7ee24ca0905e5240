"""Staff area page of the project accounts the portal manages on schedulers (/manage/accounts/):
per cluster, the accounts and their members, the limits last pushed and when, the scheduler's
refusals, drift between what the portal wants and what the scheduler holds, and a repair
button. Same permission as the rest of the staff area (others get a 404)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from jobs import services
from jobs.backends.base import BackendError, BackendUnavailable
from jobs.exceptions import InvalidAccountSetting
from jobs.models import SchedulerAccount
from quotas.models import Cluster
from quotas.staff_views import facility_admin_required


def _cluster_rows() -> list[dict[str, Any]]:
    clusters = [c for c in Cluster.objects.order_by("name") if services.accounts_managed(c)]
    accounts = SchedulerAccount.objects.filter(cluster__in=clusters).select_related(
        "project__organization"
    )
    by_cluster: dict[int, list[SchedulerAccount]] = {c.pk: [] for c in clusters}
    for account in accounts:
        by_cluster[account.cluster_id].append(account)
    rows = []
    for cluster in clusters:
        drift: dict[str, services.Drift] = {}
        drift_error = ""
        if by_cluster[cluster.pk]:
            try:
                drift = {d.name: d for d in services.accounts_drift(cluster=cluster)}
            except (BackendError, BackendUnavailable) as exc:
                drift_error = str(exc)
        rows.append(
            {
                "cluster": cluster,
                "accounts": [
                    {"account": a, "drift": drift.get(a.name)} for a in by_cluster[cluster.pk]
                ],
                "drifted": sum(1 for d in drift.values() if d.drifted),
                "refused": sum(1 for a in by_cluster[cluster.pk] if a.last_error),
                "drift_error": drift_error,
            }
        )
    return rows


@facility_admin_required
def manage_scheduler_accounts(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/manage/scheduler_accounts.html", {"rows": _cluster_rows()})


@facility_admin_required
@require_POST
def manage_scheduler_account_cap(request: HttpRequest, account_id: int) -> HttpResponse:
    """Set a project's concurrent GPU cap on one cluster (empty = no cap); a bad value is a
    400 naming the field and changes nothing. Pushed at the next tick."""
    account = get_object_or_404(SchedulerAccount, pk=account_id)
    raw = request.POST.get("gpu_cap", "").strip()
    try:
        cap = None if raw == "" else int(raw)
    except ValueError:
        cap = -1  # not a whole number: refused below like a negative one
    try:
        services.scheduler_account_set_cap(account=account, gpu_cap=cap)
    except InvalidAccountSetting as exc:
        messages.error(request, f"{account.name}: {exc.field}: {exc.detail}")
        response = render(request, "jobs/manage/scheduler_accounts.html", {"rows": _cluster_rows()})
        response.status_code = 400
        return response
    messages.success(request, f"{account.name}: GPU cap set; pushed at the next tick.")
    return redirect("manage-scheduler-accounts")


@facility_admin_required
@require_POST
def manage_scheduler_accounts_repair(request: HttpRequest, uuid: str) -> HttpResponse:
    """Push everything wanted on one cluster now (slurm_sync's repair), whatever was pushed."""
    cluster = get_object_or_404(Cluster, uuid=uuid)
    try:
        tick = services.accounts_sync(cluster=cluster, force=True)
    except (BackendError, BackendUnavailable) as exc:
        messages.error(request, f"Could not reach {cluster.name}: {exc}")
    else:
        if tick.refused:
            messages.error(
                request,
                f"{cluster.name}: pushed {tick.pushed}, refused {len(tick.refused)} "
                "(see each account's error).",
            )
        else:
            messages.success(request, f"{cluster.name}: pushed {tick.pushed} accounts.")
    return redirect("manage-scheduler-accounts")
