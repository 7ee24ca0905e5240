"""The portal's side of the session proxy (deploy/sessions/nginx.conf).

nginx serves /sessions/<uuid>/... . For each request it first asks `session_auth` (its
auth_request, with the shared secret and the original URI): 200 with the upstream address and
the Authorization value to add when the caller may open a running, located session; 401 when
nobody is signed in; 403 otherwise. On 401/403 (and when the app does not answer: 502/504)
nginx hands the request to `session_page`, which answers as the portal would: the login page,
a 404 for anyone but the owner (or a manager it was shared with), a clear page for a session
that is starting or has ended. The app's secret only ever goes in session_auth's headers to
nginx, which puts it upstream; it never reaches the browser.
"""

from __future__ import annotations

import re
import uuid as uuid_lib
from http import HTTPStatus
from typing import cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.models import User
from accounts.selectors import project_get_for_user
from jobs import selectors
from jobs.forms import ProjectIdleLimitForm, SessionStartForm
from jobs.models import Job, Session
from jobs.services.sessions import (
    project_idle_limit_set,
    session_locate,
    session_may_open,
    session_start,
    session_touch,
)
from portal.errors import DomainError, NotFound

SESSION_PATH_RE = re.compile(r"^/sessions/([0-9a-fA-F-]{32,36})(?:/|$)")


def _session(job_uuid: uuid_lib.UUID | str) -> Session | None:
    try:
        key = uuid_lib.UUID(str(job_uuid))
    except ValueError:
        return None
    return (
        Session.objects.select_related("job", "job__cluster", "job__project", "app")
        .filter(job__uuid=key, job__kind=Job.Kind.SESSION)
        .first()
    )


def _proxy_trusted(request: HttpRequest) -> bool:
    secret = settings.SESSIONS_PROXY_SECRET
    given = request.headers.get("X-Session-Proxy-Secret", "")
    return bool(secret) and constant_time_compare(given, secret)


@csrf_exempt
@never_cache
def session_auth(request: HttpRequest) -> HttpResponse:
    """nginx's auth_request: may this request pass to the session's app, and where to."""
    if not _proxy_trusted(request):
        raise Http404
    if not request.user.is_authenticated:
        return HttpResponse(status=HTTPStatus.UNAUTHORIZED)
    match = SESSION_PATH_RE.match(request.headers.get("X-Original-URI", ""))
    session = _session(match.group(1)) if match else None
    if session is None or not session_may_open(user=cast(User, request.user), session=session):
        return HttpResponse(status=HTTPStatus.FORBIDDEN)
    session = session_locate(session=session)
    if session.job.state != Job.State.RUNNING or not session.upstream or not session.token:
        return HttpResponse(status=HTTPStatus.FORBIDDEN)
    session_touch(session=session)
    response = HttpResponse(status=HTTPStatus.OK)
    response["X-Session-Upstream"] = session.upstream
    scheme = session.app.token_scheme
    response["X-Session-Authorization"] = f"{scheme} {session.token}" if scheme else ""
    # For nginx to blank it in anything the app sends back (see deploy/sessions/nginx.conf.in).
    response["X-Session-Secret"] = session.token
    return response


@never_cache
@login_required
def session_page(request: HttpRequest, job_uuid: uuid_lib.UUID, path: str = "") -> HttpResponse:
    """What /sessions/<uuid>/... answers when the proxy does not pass it to the app."""
    session = _session(job_uuid)
    if session is None or not session_may_open(user=cast(User, request.user), session=session):
        raise Http404("No such session")
    job = session.job
    context = {"session": session, "job": job, "proxy": bool(settings.SESSIONS_PROXY_SECRET)}
    if job.is_final:
        return render(request, "jobs/session_ended.html", context, status=HTTPStatus.GONE)
    response = render(
        request, "jobs/session_waiting.html", context, status=HTTPStatus.SERVICE_UNAVAILABLE
    )
    response["Retry-After"] = "5"
    return response


@login_required
def session_list(request: HttpRequest) -> HttpResponse:
    """The caller's sessions (newest first) and the form to start one."""
    user = cast(User, request.user)
    if request.method == "POST":
        form = SessionStartForm(request.POST, user=user)
        if form.is_valid():
            try:
                job = session_start(user=user, **form.service_kwargs())
            except DomainError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.detail)
            else:
                messages.success(request, f"{job.name} started: it opens here once its job runs.")
                return redirect("session-list")
    else:
        form = SessionStartForm(user=user)
    sessions = (
        Session.objects.filter(job__user=user, job__kind=Job.Kind.SESSION)
        .select_related("job", "job__project__session_settings", "job__cluster", "app")
        .order_by("-job__created_at")[:50]
    )
    rows = [(session, selectors.session_clock(session=session)) for session in sessions]
    return render(request, "jobs/sessions.html", {"form": form, "rows": rows})


@never_cache
@login_required
def session_clock_partial(request: HttpRequest, job_uuid: uuid_lib.UUID) -> HttpResponse:
    """htmx: a session's time left, idle countdown and cost so far (jobs/_session_clock.html)."""
    try:
        session = selectors.session_get_for_user(user=cast(User, request.user), job_uuid=job_uuid)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    clock = selectors.session_clock(session=session)
    return render(request, "jobs/_session_clock.html", {"job": session.job, "clock": clock})


@require_POST
@login_required
def project_idle_limit(request: HttpRequest, uuid: uuid_lib.UUID) -> HttpResponse:
    """A project manager sets the project's session idle limit (the form on the project page)."""
    user = cast(User, request.user)
    try:
        project = project_get_for_user(user, uuid)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    form = ProjectIdleLimitForm(request.POST)
    if form.is_valid():
        try:
            project_idle_limit_set(
                actor=user, project=project, idle_minutes=form.cleaned_data["idle_minutes"]
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, "The idle limit of this project's sessions is saved.")
    else:
        messages.error(request, "The idle limit must be a whole number of minutes, at least 1.")
    return redirect("accounts:project_detail", uuid=project.uuid)
