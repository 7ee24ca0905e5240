"""What the owner's job pages (jobs.views) and the staff's (jobs.staff_views) share: a filter
value from the query string, a keyset page of jobs, the stdout/stderr tabs of a job page, and
cancelling a job with a flash message."""

from __future__ import annotations

import base64
from collections.abc import Collection
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from jobs import services
from jobs.models import Job
from portal.errors import DomainError
from portal.users import acting_user

PAGE_SIZE = 50
LOG_TAIL_BYTES = 64 * 1024
FAILED_STATES = (Job.State.FAILED, Job.State.TIMEOUT, Job.State.NODE_FAIL, Job.State.REJECTED)


def encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        stamp, _, pk = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(stamp), int(pk)
    except (ValueError, UnicodeDecodeError):
        return None


def query_choice(request: HttpRequest, name: str, allowed: Collection[str]) -> str | None:
    """?<name>= when it is one of `allowed`; None (no filter) when absent or anything else."""
    value = request.GET.get(name) or None
    return value if value in allowed else None


def keyset_page(request: HttpRequest, jobs: QuerySet[Job]) -> dict[str, Any]:
    """The PAGE_SIZE jobs of `jobs` (newest first) after ?cursor=, the cursor of the next page
    ("" on the last) and the other query parameters (the filters) to carry to it."""
    if (cursor := decode_cursor(request.GET.get("cursor", ""))) is not None:
        stamp, pk = cursor
        jobs = jobs.filter(Q(created_at__lt=stamp) | Q(created_at=stamp, id__lt=pk))
    page = list(jobs[: PAGE_SIZE + 1])
    params = request.GET.copy()
    params.pop("cursor", None)
    return {
        "jobs": page[:PAGE_SIZE],
        "next_cursor": encode_cursor(page[PAGE_SIZE - 1]) if len(page) > PAGE_SIZE else "",
        "filter_query": params.urlencode(),
    }


def log_tail(request: HttpRequest, job: Job, stream: str) -> dict[str, Any]:
    """The last LOG_TAIL_BYTES of one stream, or why it cannot be read."""
    try:
        log = services.job_read_log(
            user=acting_user(request), job=job, stream=stream, offset=-LOG_TAIL_BYTES
        )
    except DomainError as exc:
        return {"stream": stream, "log": None, "text": "", "error": exc.detail}
    return {
        "stream": stream,
        "log": log,
        "text": log.data.decode("utf-8", "replace"),
        "error": "",
    }


def log_tabs(request: HttpRequest, job: Job) -> dict[str, Any]:
    """The stdout and stderr tabs of a job page, the owner's or the staff's."""
    stdout, stderr = log_tail(request, job, "stdout"), log_tail(request, job, "stderr")
    return {
        "stderr": stderr,
        "tabs": [stdout, stderr],
        # A failed job opens on what it said on stderr.
        "show_stderr": job.state in FAILED_STATES and bool(stderr["text"]),
    }


def job_cancel_flash(request: HttpRequest, job: Job, *, cancelled: str) -> Job:
    """Cancel `job` through the cancel service as the request's user and flash how it went:
    `cancelled` once it is, that the cluster is stopping it, or why it cannot be."""
    try:
        job = services.job_cancel(user=acting_user(request), job=job)
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        if job.state == Job.State.CANCELLED:
            messages.success(request, cancelled)
        else:
            messages.info(request, "Cancellation requested; the cluster is stopping the job.")
    return job
