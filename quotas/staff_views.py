"""The staff area (/manage/): search people, organizations and projects, see balances and burn
rates, credit/debit with a memo, extend, suspend and resume allocations, set rates, usage reports.

Open to staff and to the "facility admins" group; anyone else gets a 404 (the area does not
exist for them). Every write goes through the same services as the API and tasks.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Organization, Project
from jobs.storage.selectors import storage_quota_bytes
from jobs.storage.services import storage_quota_parse, storage_quota_set
from portal.errors import DomainError
from portal.formatting import su_csv
from portal.ids import as_uuid
from portal.users import acting_user
from portal.web import form_error, refusal, run_action, visible
from quotas import selectors, services
from quotas.forms import (
    AdjustForm,
    AllocationCreateForm,
    ExtendForm,
    RateForm,
    SuspendForm,
    UsageFilterForm,
    day_end,
    day_start,
)
from quotas.history import history_rows
from quotas.models import Allocation, Cluster
from quotas.policy import is_facility_admin

View = Callable[..., HttpResponse]


def facility_admin_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_facility_admin(request.user):
            raise Http404("No such page")
        return view(request, *args, **kwargs)

    return wrapped


# What the manage pages look up by uuid.
_Found = TypeVar("_Found", Organization, Project, Allocation)


def _allocation_rows(allocations: Iterable[Allocation]) -> list[dict[str, Any]]:
    rows = list(allocations)
    burn = selectors.burn_rates([a.pk for a in rows])
    return [
        {"allocation": a, "burn": burn[a.pk], "days_left": burn[a.pk].days_left(a.available)}
        for a in rows
    ]


def _get(model: type[_Found], uuid: str) -> _Found:
    key = as_uuid(uuid)
    obj = model.objects.filter(uuid=key).first() if key else None
    if obj is None:
        raise Http404("Not found")
    return obj


@facility_admin_required
def manage_home(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    orgs, projects = selectors.staff_search(query)
    people = selectors.staff_people_search(query)
    attention = (
        Allocation.objects.filter(status=Allocation.Status.SUSPENDED)
        .select_related("project__organization")
        .order_by("ends_at")[:20]
    )
    ending = (
        Allocation.objects.filter(
            status=Allocation.Status.ACTIVE,
            ends_at__lte=timezone.now() + timedelta(days=30),
        )
        .select_related("project__organization")
        .order_by("ends_at")[:20]
    )
    return render(
        request,
        "quotas/manage/home.html",
        {
            "q": query,
            "orgs": orgs[:50],
            "projects": projects[:100],
            "people": people[:50],
            "suspended": attention,
            "ending": ending,
        },
    )


@facility_admin_required
def manage_organization(request: HttpRequest, uuid: str) -> HttpResponse:
    org = _get(Organization, uuid)
    allocations = (
        Allocation.objects.filter(project__organization=org)
        .select_related("project__organization")
        .prefetch_related("clusters")
        .order_by("project__name", "ends_at")
    )
    return render(
        request,
        "quotas/manage/organization.html",
        {
            "org": org,
            "projects": org.projects.order_by("name"),
            "rows": _allocation_rows(allocations),
        },
    )


@facility_admin_required
@require_http_methods(["GET", "POST"])
def manage_project(request: HttpRequest, uuid: str) -> HttpResponse:
    project = _get(Project, uuid)
    form = AllocationCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            allocation = services.allocation_create(
                actor=acting_user(request),
                project=project,
                kind=data["kind"],
                clusters=data["clusters"],
                starts_at=day_start(data["starts_on"]),
                ends_at=day_end(data["ends_on"]),
                amount=data["amount"],
                memo=data["memo"],
                key=f"manage:{data['key']}",
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Allocation of {data['amount']} SU created.")
            return redirect("quotas:manage_allocation", uuid=allocation.uuid)
    allocations = (
        project.allocations.select_related("project__organization")
        .prefetch_related("clusters")
        .order_by("ends_at")
    )
    return render(
        request,
        "quotas/manage/project.html",
        {
            "project": project,
            "rows": _allocation_rows(allocations),
            "form": form,
            "storage_quota": storage_quota_bytes(project=project),
            "storage_default": settings.GPUC_STORAGE_DEFAULT_QUOTA_BYTES,
        },
    )


@facility_admin_required
@require_POST
def manage_project_storage(request: HttpRequest, uuid: str) -> HttpResponse:
    """Set the project's storage quota; a bad size is a 400 page naming the problem."""
    project = _get(Project, uuid)
    try:
        row = storage_quota_set(
            actor=acting_user(request),
            project=project,
            quota_bytes=storage_quota_parse(request.POST.get("quota", "")),
        )
    except DomainError as exc:
        return refusal(
            request, exc, back=reverse("quotas:manage_project", kwargs={"uuid": project.uuid})
        )
    size = filesizeformat(row.quota_bytes)
    messages.success(request, f"Storage quota set to {size} ({row.quota_bytes} bytes).")
    return redirect("quotas:manage_project", uuid=project.uuid)


@facility_admin_required
def manage_allocation(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = _get(Allocation, uuid)
    row = _allocation_rows([allocation])[0]
    ledger = selectors.allocation_ledger(allocation)[:100]
    return render(
        request,
        "quotas/manage/allocation.html",
        {
            **row,
            "ledger": ledger,
            "used_percent": services.usage_percent(allocation),
            "adjust_form": AdjustForm(),
            "extend_form": ExtendForm(),
            "suspend_form": SuspendForm(),
            "history": history_rows(allocation)[:20],
        },
    )


@facility_admin_required
@require_POST
def manage_allocation_adjust(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = _get(Allocation, uuid)
    form = AdjustForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        run_action(
            request,
            lambda: services.ledger_adjust(
                actor=acting_user(request),
                allocation=allocation,
                amount=data["amount"],
                key=f"manage-adjust:{allocation.uuid}:{data['key']}",
                memo=data["memo"],
            ),
            f"{'Credited' if data['amount'] > 0 else 'Debited'} {abs(data['amount'])} SU.",
        )
    else:
        _flash_errors(request, form)
    return redirect("quotas:manage_allocation", uuid=allocation.uuid)


@facility_admin_required
@require_POST
def manage_allocation_extend(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = _get(Allocation, uuid)
    form = ExtendForm(request.POST)
    if form.is_valid():
        run_action(
            request,
            lambda: services.allocation_extend(
                actor=acting_user(request), allocation=allocation, ends_at=form.ends_at()
            ),
            f"Extended to {form.cleaned_data['ends_on']}.",
        )
    else:
        _flash_errors(request, form)
    return redirect("quotas:manage_allocation", uuid=allocation.uuid)


@facility_admin_required
@require_POST
def manage_allocation_suspend(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = _get(Allocation, uuid)
    form = SuspendForm(request.POST)
    if form.is_valid():
        run_action(
            request,
            lambda: services.allocation_suspend(
                actor=acting_user(request),
                allocation=allocation,
                reason=form.cleaned_data["reason"],
            ),
            "Suspended: new jobs are refused; running ones settle normally.",
        )
    else:
        _flash_errors(request, form)
    return redirect("quotas:manage_allocation", uuid=allocation.uuid)


@facility_admin_required
@require_POST
def manage_allocation_resume(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = _get(Allocation, uuid)
    run_action(
        request,
        lambda: services.allocation_resume(actor=acting_user(request), allocation=allocation),
        "Resumed.",
    )
    return redirect("quotas:manage_allocation", uuid=allocation.uuid)


def _flash_errors(request: HttpRequest, form: BaseForm) -> None:
    for field, errors in form.errors.items():
        messages.error(request, f"{field}: {' '.join(str(e) for e in errors)}")


@facility_admin_required
@require_http_methods(["GET", "POST"])
def manage_clusters(request: HttpRequest) -> HttpResponse:
    form = RateForm(request.POST or None)
    if request.method == "POST":
        cluster = visible(selectors.cluster_for_staff, request.POST.get("cluster", ""))
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.rate_create(actor=acting_user(request), cluster=cluster, **data)
            except DomainError as exc:
                messages.error(request, exc.detail)
            else:
                messages.success(request, f"Rate scheduled on {cluster.name}.")
                return redirect("quotas:manage_clusters")
        else:
            _flash_errors(request, form)
    clusters = list(Cluster.objects.order_by("name"))
    schedule = selectors.rate_schedule(clusters)
    rows = [
        {
            "cluster": c,
            "current": [r for r in schedule.get(c.pk, []) if r.current],
            "upcoming": [r for r in schedule.get(c.pk, []) if not r.current],
        }
        for c in clusters
    ]
    return render(request, "quotas/manage/clusters.html", {"rows": rows, "form": RateForm()})


@facility_admin_required
def manage_cluster_history(request: HttpRequest, uuid: str) -> HttpResponse:
    cluster = visible(selectors.cluster_for_staff, uuid)
    rate_rows = []
    for rate in cluster.rates.order_by("-effective_from"):
        for row in history_rows(rate):
            rate_rows.append({**row, "rate": rate})
    rate_rows.sort(key=lambda r: r["when"], reverse=True)
    return render(
        request,
        "quotas/manage/cluster_history.html",
        {"cluster": cluster, "rows": history_rows(cluster), "rate_rows": rate_rows},
    )


@facility_admin_required
def manage_usage(request: HttpRequest) -> HttpResponse:
    form = UsageFilterForm(request.GET or None)
    filters: dict[str, Any] = {}
    if form.is_valid():
        data = form.cleaned_data
        filters = {
            "since": day_start(data["since"]) if data["since"] else None,
            "until": day_end(data["until"]) if data["until"] else None,
            "organization": data["organization"],
            "project": data["project"],
            "cluster": data["cluster"],
        }
    rows = selectors.usage_report(**filters)
    if request.GET.get("format") == "csv":
        return _usage_csv(rows)
    totals = {
        "charged": sum((r.charged for r in rows), services.su(0)),
        "refunded": sum((r.refunded for r in rows), services.su(0)),
    }
    totals["net"] = totals["charged"] - totals["refunded"]
    query = request.GET.copy()
    query["format"] = "csv"
    return render(
        request,
        "quotas/manage/usage.html",
        {"form": form, "rows": rows, "totals": totals, "csv_query": query.urlencode()},
    )


def _usage_csv(rows: list[selectors.UsageRow]) -> HttpResponse:
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["month", "organization", "project", "cluster", "charged_su", "refunded_su", "net_su"]
    )
    for r in rows:
        writer.writerow(
            [
                f"{r.month:%Y-%m}",
                _cell(r.organization),
                _cell(r.project),
                _cell(r.cluster),
                su_csv(r.charged),
                su_csv(r.refunded),
                su_csv(r.net),
            ]
        )
    return response


def _cell(value: str) -> str:
    """Neutralise spreadsheet formulas in user-chosen names (CSV injection)."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
