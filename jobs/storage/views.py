"""The project's file browser (web): the listing is rendered here; uploads (with a progress
bar), new folders, renames and deletes go from static/js/files.js to the REST API."""

from __future__ import annotations

import uuid as uuid_lib
from typing import cast

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.models import User
from jobs.storage import fs, selectors, services
from jobs.storage.exceptions import StorageNotFound
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
    try:
        folder = services.storage_folder(
            user=user, project=project, cluster=request.GET.get("cluster") or None
        )
        parts = fs.clean_path(path, allow_root=True) if path else []
        context.update(
            folder=folder,
            entries=services.storage_list(user=user, folder=folder, path=path),
            crumbs=[("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)],
            path="/".join(parts),
            clusters=selectors.storage_clusters(project=project),
            quota_bytes=selectors.storage_quota_bytes(project=project),
            usage_bytes=services.storage_usage(folder=folder),
            max_upload_bytes=services.max_upload_bytes(),
        )
    except (DomainError, fs.BadPath) as exc:
        context["error"] = str(exc)
    return render(request, "jobs/storage/files.html", context)
