"""The project's file browser (web): the listing is rendered here; uploads (with a progress
bar), new folders, renames and deletes go from static/js/files.js to the REST API."""

from __future__ import annotations

import uuid as uuid_lib
from http import HTTPStatus
from typing import cast
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from jobs.models import Job
from jobs.storage import fs, paging, selectors, services
from jobs.storage.exceptions import InvalidPage, StorageNotFound
from portal.errors import DomainError


@login_required
@require_GET
def project_files(request: HttpRequest, uuid: uuid_lib.UUID) -> HttpResponse:
    user = cast(User, request.user)
    try:
        project = selectors.storage_project_for_user(user=user, project_uuid=uuid)
    except StorageNotFound:
        raise Http404("No such project") from None
    path = request.GET.get("path", "")
    context: dict[str, object] = {"project": project, "path": path, "entries": [], "error": ""}
    status = HTTPStatus.OK
    try:
        folder = services.storage_folder(
            user=user, project=project, cluster=request.GET.get("cluster") or None
        )
        listing = services.storage_list(
            user=user,
            folder=folder,
            path=path,
            cursor=request.GET.get("cursor", ""),
            page_size=paging.WEB_PAGE_SIZE,
        )
        parts = listing.path.split("/") if listing.path else []
        quota = selectors.storage_quota_bytes(project=project)
        usage = services.storage_usage(folder=folder)
        here = {"cluster": folder.cluster.name, "path": listing.path}
        context.update(
            folder=folder,
            entries=listing.entries,
            next_query=urlencode({**here, "cursor": listing.next_cursor})
            if listing.next_cursor
            else "",
            previous_query=urlencode({**here, "cursor": listing.previous_cursor})
            if listing.previous_cursor
            else "",
            crumbs=[("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)],
            path=listing.path,
            clusters=selectors.storage_clusters(project=project),
            quota_bytes=quota,
            usage_bytes=usage,
            free_bytes=max(0, quota - usage),
            max_upload_bytes=services.max_upload_bytes(),
        )
    except InvalidPage as exc:
        context["error"] = str(exc)
        status = HTTPStatus.BAD_REQUEST
    except (DomainError, fs.BadPath) as exc:
        context["error"] = str(exc)
    return render(request, "jobs/storage/files.html", context, status=status)


@login_required
@require_POST
def project_files_copy_results(
    request: HttpRequest, uuid: uuid_lib.UUID, job_uuid: uuid_lib.UUID
) -> HttpResponse:
    """The job page's "Copy to project storage": the results land in results/<name>-<id>/ of
    the project's folder on the job's cluster (or its only storage cluster)."""
    user = cast(User, request.user)
    try:
        project = selectors.storage_project_for_user(user=user, project_uuid=uuid)
    except StorageNotFound:
        raise Http404("No such project") from None
    names = {c.name for c in selectors.storage_clusters(project=project)}
    on = Job.objects.filter(uuid=job_uuid, project=project).values_list("cluster__name", flat=True)
    job_cluster = next((name for name in on if name in names), None)
    try:
        folder = services.storage_folder(user=user, project=project, cluster=job_cluster)
        copied = services.storage_copy_results(user=user, folder=folder, job_uuid=job_uuid)
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("job-detail", job_uuid=job_uuid)
    messages.success(request, f"Copied {len(copied)} result files into the project's storage.")
    where = copied[0].path.rpartition("/")[0] if copied else ""
    query = urlencode({"cluster": folder.cluster.name, "path": where})
    return HttpResponseRedirect(f"{reverse('project-files', args=[project.uuid])}?{query}")
