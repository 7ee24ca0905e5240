"""Staff area pages of jobs (/manage/): a person's page (their organizations, projects,
cluster accounts and jobs), any tenant's jobs (listed, opened read-only, cancelled through the
same service as the owner's cancel), and the project accounts the portal manages on
schedulers (/manage/accounts/: per cluster, the accounts and their members, the limits last
pushed and when, the scheduler's refusals, drift, and a repair button). Same permission as the
rest of the staff area (others get a 404)."""

from __future__ import annotations

import uuid as uuid_lib
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Membership, ProjectMember, User
from jobs import selectors, services
from jobs.backends.base import BackendError, BackendUnavailable
from jobs.exceptions import InvalidAccountSetting
from jobs.models import ClusterAccount, Job, SchedulerAccount
from jobs.pages import job_cancel_flash, keyset_page, log_tabs, query_choice
from portal.users import acting_user
from portal.web import visible
from quotas.models import Cluster
from quotas.services import staff_roles_of
from quotas.staff_views import facility_admin_required


def _staff_job(request: HttpRequest, job_uuid: uuid_lib.UUID) -> Job:
    return visible(
        lambda: selectors.job_get_for_staff(user=acting_user(request), job_uuid=job_uuid)
    )


@facility_admin_required
@require_GET
def manage_user(request: HttpRequest, username: str) -> HttpResponse:
    """One person: who they are, where they belong, their cluster accounts and recent jobs."""
    person = get_object_or_404(User, username=username)
    return render(
        request,
        "jobs/manage/user.html",
        {
            "person": person,
            "staff_roles": staff_roles_of(user=person),
            "memberships": Membership.objects.filter(user=person)
            .select_related("organization")
            .order_by("organization__name"),
            "project_roles": ProjectMember.objects.filter(user=person)
            .select_related("project__organization")
            .order_by("project__organization__name", "project__name"),
            "cluster_accounts": ClusterAccount.objects.filter(user=person)
            .select_related("cluster")
            .order_by("cluster__name"),
            "jobs": list(
                selectors.job_list_for_staff(user=acting_user(request), owner=person.username)[:20]
            ),
        },
    )


@facility_admin_required
@require_GET
def manage_job_list(request: HttpRequest) -> HttpResponse:
    """Any tenant's jobs, newest first, by person, project, organization and state."""
    state = query_choice(request, "state", Job.State.values)
    current = {
        "user": request.GET.get("user", "").strip(),
        "project": request.GET.get("project", "").strip(),
        "organization": request.GET.get("organization", "").strip(),
        "state": state or "",
    }
    qs = selectors.job_list_for_staff(
        user=acting_user(request),
        owner=current["user"] or None,
        project=current["project"] or None,
        organization=current["organization"] or None,
        state=state,
    )
    return render(
        request,
        "jobs/manage/job_list.html",
        {
            **keyset_page(request, qs),
            "states": Job.State.choices,
            "current": current,
        },
    )


@facility_admin_required
@require_GET
def manage_job_detail(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    """One job of any tenant, read-only: state, why it failed, timeline, the ends of its
    stdout and stderr, its script; and a cancel button while it runs."""
    job = _staff_job(request, job_uuid)
    return render(
        request,
        "jobs/manage/job.html",
        {"job": job, "events": selectors.job_events(job=job), **log_tabs(request, job)},
    )


@facility_admin_required
@require_POST
def manage_job_cancel(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    """Cancel any tenant's job through the owner's cancel service; the timeline names the
    staff member."""
    job = job_cancel_flash(
        request,
        _staff_job(request, job_uuid),
        cancelled="Job cancelled; its owner sees who did on the job's page.",
    )
    return redirect("manage-job-detail", job_uuid=job.uuid)


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
