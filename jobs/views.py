"""Job pages: list, submit (with a live estimate), job page with live log tail and results."""

from __future__ import annotations

import os
import uuid as uuid_lib
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from jobs import selectors, services
from jobs.backends.base import ResultFile
from jobs.exceptions import JobNotFound, NoClusterAccount
from jobs.forms import JobSubmitForm
from jobs.models import Job
from jobs.pages import job_cancel_flash, keyset_page, log_tabs, query_choice
from jobs.validation import ABSOLUTE, DEFAULTS
from portal.errors import DomainError
from portal.users import acting_user as _user
from portal.web import visible
from quotas.models import Allocation, Cluster
from quotas.selectors import allocations_for_user


def _job(request: HttpRequest, job_uuid: uuid_lib.UUID) -> Job:
    return visible(lambda: selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid))


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    """Filters (project, state, cluster, origin, name) and keyset pages of 50, newest first."""
    state = query_choice(request, "state", Job.State.values)
    origin = query_choice(request, "origin", Job.Origin.values)
    qs = selectors.job_list_for_user(
        user=_user(request),
        project=request.GET.get("project") or None,
        state=state,
        cluster=request.GET.get("cluster") or None,
        origin=origin,
        name=request.GET.get("name", "").strip() or None,
    ).order_by("-created_at", "-id")
    return render(
        request,
        "jobs/list.html",
        {
            **keyset_page(request, qs),
            "projects": selectors.projects_for_user(user=_user(request)),
            "clusters": selectors.clusters_for_user(user=_user(request)),
            "states": Job.State.choices,
            "origins": Job.Origin.choices,
            "current": {
                "project": request.GET.get("project", ""),
                "state": state or "",
                "origin": origin or "",
                "cluster": request.GET.get("cluster", ""),
                "name": request.GET.get("name", ""),
            },
        },
    )


def _initial_from_template(request: HttpRequest) -> dict[str, Any]:
    template_id = request.GET.get("template")
    if not template_id:
        return {}
    try:
        template = selectors.job_templates_for_user(user=_user(request)).get(
            uuid=uuid_lib.UUID(template_id)
        )
    except (ValueError, Exception):
        return {}
    initial: dict[str, Any] = {
        "name": template.name.replace(" ", "-")[:128],
        "script": template.script,
        "gpus": template.gpus,
        "gpu_type": template.gpu_type,
        "cpus": template.cpus,
        "memory_mb": template.memory_mb,
        "time_limit_minutes": template.time_limit_minutes,
    }
    if template.cluster:
        initial["cluster"] = template.cluster.name
    if template.project:
        initial["project"] = template.project.uuid
    return initial


def _initial_from_job(request: HttpRequest) -> dict[str, Any]:
    """ "Resubmit with changes": the form prefilled from one of the caller's jobs (?from=<uuid>);
    a job the caller cannot see prefills nothing."""
    source = request.GET.get("from")
    if not source:
        return {}
    try:
        job = selectors.job_get_for_user(user=_user(request), job_uuid=source)
    except JobNotFound:
        return {}
    return {
        "project": job.project.uuid,
        "cluster": job.cluster.name,
        "name": job.name,
        "script": job.script,
        "gpus": job.gpus,
        "gpu_type": job.gpu_type,
        "cpus": job.cpus,
        "memory_mb": job.memory_mb,
        "time_limit_minutes": job.time_limit_minutes,
        "partition": job.partition,
        "array": job.array,
        "env": "".join(f"{key}={value}\n" for key, value in sorted(job.env.items())),
    }


@login_required
@require_http_methods(["GET", "POST"])
def job_submit_view(request: HttpRequest) -> HttpResponse:
    access_needed: dict[str, str] = {}
    if request.method == "POST":
        form = JobSubmitForm(request.POST, user=_user(request))
        if form.is_valid():
            try:
                job = services.job_submit(user=_user(request), **form.service_kwargs())
            except DomainError as exc:
                field = exc.field if exc.field in form.fields else None
                form.add_error(field, exc.detail)
                access_needed = _access_link(form, exc)
            else:
                messages.success(request, f"Job {job.name} submitted.")
                return redirect("job-detail", job_uuid=job.uuid)
    else:
        initial = _initial_from_template(request) or _initial_from_job(request)
        if "project" not in initial:
            initial.update(_initial_payer(_user(request)))
        form = JobSubmitForm(user=_user(request), initial=initial)
    balances = _balances(_user(request))
    return render(
        request,
        "jobs/submit.html",
        {
            "form": form,
            "templates": selectors.job_templates_for_user(user=_user(request)),
            "access_needed": access_needed,
            "balances": balances,
            "cluster_limits": [_limits(c) for c in form.cluster_queryset],
            "can_pay": any(b["available"] > 0 for b in balances),
        },
    )


def _funded(user: User) -> QuerySet[Allocation]:
    """The user's active allocations with SU left, soonest-ending first (the hold policy)."""
    return (
        allocations_for_user(user)
        .filter(
            status=Allocation.Status.ACTIVE,
            credited__gt=F("held") + F("charged"),
            project__in=selectors.projects_for_user(user=user),
        )
        .order_by("ends_at", "id")
    )


def _initial_payer(user: User) -> dict[str, Any]:
    """Open the form on a project that can pay, and a cluster its allocation covers."""
    allocation = _funded(user).select_related("project").first()
    if allocation is None:
        return {}
    initial: dict[str, Any] = {"project": allocation.project.uuid}
    usable = {c.name for c in selectors.clusters_for_user(user=user)}
    if cluster := next((c for c in allocation.clusters.all() if c.name in usable), None):
        initial["cluster"] = cluster.name
    return initial


def _balances(user: User) -> list[dict[str, Any]]:
    """SU available now per project the user may submit for (active allocations only)."""
    available: dict[int, Decimal] = {}
    for row in _funded(user).values("project_id", "credited", "held", "charged"):
        left = row["credited"] - row["held"] - row["charged"]
        available[row["project_id"]] = available.get(row["project_id"], Decimal(0)) + left
    return [
        {"project": p, "available": available.get(p.pk, Decimal(0))}
        for p in selectors.projects_for_user(user=user)
    ]


LIMIT_LABELS = {
    "max_gpus": "GPUs",
    "max_cpus": "CPUs",
    "max_memory_mb": "memory (MB)",
    "max_time_minutes": "time (minutes)",
}


def _limits(cluster: Cluster) -> dict[str, Any]:
    """The cluster's per-job limits as the submit checks apply them (cluster level)."""
    limits = []
    for key, label in LIMIT_LABELS.items():
        try:
            value = min(int(cluster.options.get(key, DEFAULTS[key])), ABSOLUTE[key])
        except (TypeError, ValueError):
            value = DEFAULTS[key]
        limits.append((label, value))
    partitions = cluster.options.get("partitions") or []
    return {
        "cluster": cluster,
        "limits": limits,
        "gpu_types": cluster.gpu_types,
        "partitions": list(partitions),
    }


def _access_link(form: JobSubmitForm, exc: DomainError) -> dict[str, str]:
    """For a user without an account on the cluster: what the "request access" button asks."""
    if not isinstance(exc, NoClusterAccount):
        return {}
    project = form.cleaned_data.get("project")
    return {
        "cluster": str(exc.extra.get("cluster_name", "")),
        "project": str(getattr(project, "uuid", "")),
    }


@login_required
@require_POST
def job_estimate_partial(request: HttpRequest) -> HttpResponse:
    """htmx: the estimate for the form's current fields (or what is wrong with them)."""
    form = JobSubmitForm(request.POST, user=_user(request))
    context: dict[str, Any] = {}
    if form.is_valid():
        try:
            context["cost"] = services.job_estimate(user=_user(request), **form.service_kwargs())
        except DomainError as exc:
            context["error"] = f"Cannot estimate: {exc.detail}"
    else:
        context["error"] = _why_no_estimate(form)
    return render(request, "jobs/_estimate.html", context)


def _why_no_estimate(form: JobSubmitForm) -> str:
    """The first problem with the form, in words a person can act on."""
    field, errors = next(iter(form.errors.items()))
    if field == "project" and not form.project_queryset.exists():
        return "Cannot estimate: you have no project yet. Create one (or be added to one) first."
    if field == "cluster" and not form.cluster_queryset.exists():
        return "Cannot estimate: no cluster is open to your organizations yet."
    if field == "__all__":
        return f"Cannot estimate: {errors[0]}"
    label = form.fields[field].label or field.replace("_", " ").capitalize()
    return f"Cannot estimate: {label} — {errors[0]}"


def _status_context(request: HttpRequest, job: Job) -> dict[str, Any]:
    results: list[ResultFile] = []
    results_error = ""
    if job.backend_id:
        try:
            results = services.job_results(user=_user(request), job=job)
        except DomainError as exc:
            results_error = exc.detail
    return {
        "job": job,
        "events": selectors.job_events(job=job),
        "held": job.hold.amount if job.hold and job.hold.state == "open" else None,
        "results": results,
        "results_error": results_error,
    }


@login_required
@require_GET
def job_detail(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    job = _job(request, job_uuid)
    context = {
        **_status_context(request, job),
        **log_tabs(request, job),
        # "(live)" only while the job runs: before, there is nothing; after, it is final.
        "live": job.state == Job.State.RUNNING,
    }
    if job.kind == Job.Kind.SESSION:
        session = selectors.session_get_for_user(user=_user(request), job_uuid=job.uuid)
        context["clock"] = selectors.session_clock(session=session)
    return render(request, "jobs/detail.html", context)


@login_required
@require_GET
def job_status_partial(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    job = _job(request, job_uuid)
    return render(request, "jobs/_status.html", _status_context(request, job))


@login_required
@require_GET
def job_log_partial(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    """htmx: bytes of ?stream= (stdout, stderr) from ?offset= appended to the tail, and the
    poller re-armed."""
    job = _job(request, job_uuid)
    stream = "stderr" if request.GET.get("stream") == "stderr" else "stdout"
    try:
        offset = int(request.GET.get("offset", "0"))
    except ValueError:
        offset = 0
    try:
        log = services.job_read_log(user=_user(request), job=job, stream=stream, offset=offset)
    except DomainError as exc:
        return render(
            request, "jobs/_log_chunk.html", {"job": job, "stream": stream, "error": exc.detail}
        )
    return render(
        request,
        "jobs/_log_chunk.html",
        {
            "job": job,
            "stream": stream,
            "log": log,
            "log_text": log.data.decode("utf-8", "replace"),
        },
    )


@login_required
@require_GET
def job_results_partial(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    job = _job(request, job_uuid)
    context = _status_context(request, job)
    # A listing that cannot be made (the output folder is a link) is the caller's 400.
    status = HTTPStatus.BAD_REQUEST if context["results_error"] else HTTPStatus.OK
    return render(request, "jobs/_results.html", context, status=status)


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    job = job_cancel_flash(request, _job(request, job_uuid), cancelled="Job cancelled.")
    return redirect("job-detail", job_uuid=job.uuid)


@login_required
@require_GET
def job_result_download(
    request: HttpRequest, job_uuid: uuid_lib.UUID, path: str
) -> FileResponse | HttpResponse:
    job = _job(request, job_uuid)
    try:
        handle = services.job_open_result(user=_user(request), job=job, path=path)
    except DomainError as exc:
        if exc.status == 404:
            raise Http404(exc.detail) from None
        return HttpResponse(exc.detail, status=exc.status, content_type="text/plain")
    return FileResponse(handle, as_attachment=True, filename=os.path.basename(path))
