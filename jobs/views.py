"""Job pages: list, submit (with a live estimate), job page with live log tail and results."""

from __future__ import annotations

import base64
import os
import uuid as uuid_lib
from datetime import datetime
from http import HTTPStatus
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from jobs import selectors, services
from jobs.exceptions import JobNotFound, NoClusterAccount
from jobs.forms import JobSubmitForm
from jobs.models import Job
from portal.errors import DomainError

PAGE_SIZE = 50
LOG_TAIL_BYTES = 64 * 1024


def _user(request: HttpRequest) -> User:
    """The signed-in user (every view here is login_required)."""
    return cast(User, request.user)


def _job(request: HttpRequest, job_uuid: uuid_lib.UUID) -> Job:
    try:
        return selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
    except JobNotFound:
        raise Http404("No such job") from None


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        stamp, _, pk = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(stamp), int(pk)
    except (ValueError, UnicodeDecodeError):
        return None


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    """Filters (project, state, cluster, origin, name) and keyset pages of 50, newest first."""
    state = request.GET.get("state") or None
    if state not in Job.State.values:
        state = None
    origin = request.GET.get("origin") or None
    if origin not in Job.Origin.values:
        origin = None
    qs = selectors.job_list_for_user(
        user=_user(request),
        project=request.GET.get("project") or None,
        state=state,
        cluster=request.GET.get("cluster") or None,
        origin=origin,
        name=request.GET.get("name", "").strip() or None,
    ).order_by("-created_at", "-id")
    if (cursor := _decode_cursor(request.GET.get("cursor", ""))) is not None:
        stamp, pk = cursor
        qs = qs.filter(Q(created_at__lt=stamp) | Q(created_at=stamp, id__lt=pk))
    jobs = list(qs[: PAGE_SIZE + 1])
    next_cursor = _encode_cursor(jobs[PAGE_SIZE - 1]) if len(jobs) > PAGE_SIZE else ""
    params = request.GET.copy()
    params.pop("cursor", None)
    return render(
        request,
        "jobs/list.html",
        {
            "jobs": jobs[:PAGE_SIZE],
            "next_cursor": next_cursor,
            "filter_query": params.urlencode(),
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
        form = JobSubmitForm(user=_user(request), initial=_initial_from_template(request))
    return render(
        request,
        "jobs/submit.html",
        {
            "form": form,
            "templates": selectors.job_templates_for_user(user=_user(request)),
            "access_needed": access_needed,
        },
    )


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
            context["cost"] = services.job_estimate(user=_user(request), data=form.service_kwargs())
        except DomainError as exc:
            context["error"] = exc.detail
    else:
        field, errors = next(iter(form.errors.items()))
        context["error"] = f"{field}: {errors[0]}" if field != "__all__" else errors[0]
    return render(request, "jobs/_estimate.html", context)


def _status_context(request: HttpRequest, job: Job) -> dict[str, Any]:
    results: list[Any] = []
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
    context = _status_context(request, job)
    log, log_error = None, ""
    try:
        log = services.job_read_log(
            user=_user(request), job=job, stream="stdout", offset=-LOG_TAIL_BYTES
        )
    except DomainError as exc:
        log_error = exc.detail
    log_text = log.data.decode("utf-8", "replace") if log else ""
    context.update({"log": log, "log_text": log_text, "log_error": log_error})
    return render(request, "jobs/detail.html", context)


@login_required
@require_GET
def job_status_partial(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    job = _job(request, job_uuid)
    return render(request, "jobs/_status.html", _status_context(request, job))


@login_required
@require_GET
def job_log_partial(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    """htmx: log bytes from ?offset= appended to the tail, and the poller re-armed."""
    job = _job(request, job_uuid)
    try:
        offset = int(request.GET.get("offset", "0"))
    except ValueError:
        offset = 0
    try:
        log = services.job_read_log(user=_user(request), job=job, stream="stdout", offset=offset)
    except DomainError as exc:
        return render(request, "jobs/_log_chunk.html", {"job": job, "error": exc.detail})
    return render(
        request,
        "jobs/_log_chunk.html",
        {"job": job, "log": log, "log_text": log.data.decode("utf-8", "replace")},
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
    job = _job(request, job_uuid)
    try:
        job = services.job_cancel(user=_user(request), job=job)
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        if job.state == Job.State.CANCELLED:
            messages.success(request, "Job cancelled.")
        else:
            messages.info(request, "Cancellation requested; the cluster is stopping the job.")
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
