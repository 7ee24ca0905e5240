"""Interactive sessions: a job of kind `session` that runs an app (JupyterLab, ...) on the
cluster, reached by the browser only through the portal's proxy at /sessions/<uuid>/.

Start: the app's command template (staff-written, in the database) is wrapped in a bash
script that runs inside the job on the node: it makes the app's secret there (so the secret
never travels in the job's script, environment or any API answer), picks the port by the
app's convention, writes {host, port, token} to session.json in the job's directory (outside
output/, so never a downloadable result), masks the secret in the app's log and execs the app.
The estimate and hold are exactly job_submit's. The portal reads session.json through the
backend (read_session_file) the first time the proxy asks where a running session listens.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Project, ProjectMember, User
from accounts.selectors import can_manage_project
from jobs.backends import get_backend
from jobs.backends.base import BackendError, BackendUnavailable
from jobs.drafts import JobDraft
from jobs.exceptions import InvalidIdleLimit, InvalidJob, JobNotFound
from jobs.models import Job, JobEvent, ProjectSessionSettings, Session, SessionApp
from jobs.notifications import notify_session_stopped_idle
from jobs.services.cancel import job_cancel
from jobs.services.specs import job_ref
from jobs.services.submit import job_submit
from portal.errors import DomainError, PermissionDenied
from quotas.models import Cluster

logger = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"^[0-9a-f]{32,128}$")
HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,255}$")

# The wrapper around an app's command. Runs as the job's user on the node; everything in it is
# fixed text or staff-written (the app's command), never a member's input.
WRAPPER = """#!/bin/bash
# GPU Commons interactive session: {app_name}. The app's secret is made here, on the node,
# and handed only to the portal's proxy (session.json, readable by this user alone).
set -u
umask 077
cd -- "$GPUC_JOB_DIR" || exit 111
# A backend that cannot read session.json back (Kubernetes) hands in the secret and the port.
GPUC_SESSION_TOKEN=${{GPUC_SESSION_TOKEN:-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \\n')}}
GPUC_SESSION_PORT={port}
GPUC_SESSION_PORT=${{GPUC_SESSION_FIXED_PORT:-$GPUC_SESSION_PORT}}
if [ "$GPUC_SESSION_PORT" = 0 ]; then
    # A port below the kernel's range for the local ends of outgoing connections (any
    # connection on the node may take one of those at any moment) that no socket of the node
    # uses, listening on whatever address or connected.
    read -r first _ < /proc/sys/net/ipv4/ip_local_port_range || first=32768
    [ "$first" -gt 12000 ] 2>/dev/null || first=32768
    for _ in $(seq 200); do
        candidate=$(( 10000 + RANDOM % (first - 10000) ))
        if ! grep -qi ":$(printf '%04X' "$candidate") " /proc/net/tcp /proc/net/tcp6 2>/dev/null
        then
            GPUC_SESSION_PORT=$candidate
            break
        fi
    done
fi
GPUC_SESSION_HOST=$(hostname -I 2>/dev/null | awk '{{print $1}}')
GPUC_SESSION_HOST=${{GPUC_SESSION_HOST:-127.0.0.1}}
GPUC_SESSION_BASE_URL="/sessions/$GPUC_JOB_UUID/"
export GPUC_SESSION_TOKEN GPUC_SESSION_PORT GPUC_SESSION_HOST GPUC_SESSION_BASE_URL
printf 's/%s/[hidden]/g\\n' "$GPUC_SESSION_TOKEN" > .session-mask.sed
exec > >(sed -u -f .session-mask.sed) 2> >(sed -u -f .session-mask.sed >&2)
printf '{{"host": "%s", "port": %d, "token": "%s"}}\\n' \\
    "$GPUC_SESSION_HOST" "$GPUC_SESSION_PORT" "$GPUC_SESSION_TOKEN" > .session.json.tmp
mv -f .session.json.tmp session.json
echo "Session app {app_slug} on $GPUC_SESSION_HOST:$GPUC_SESSION_PORT$GPUC_SESSION_BASE_URL"
{command}
"""

PLACEHOLDERS = {
    "{port}": '"$GPUC_SESSION_PORT"',
    "{token}": '"$GPUC_SESSION_TOKEN"',
    "{base_url}": '"$GPUC_SESSION_BASE_URL"',
    "{host}": '"$GPUC_SESSION_HOST"',
}


def session_script(*, app: SessionApp) -> str:
    """The job script of a session of `app`: the wrapper above around the app's command."""
    command = app.command
    for placeholder, variable in PLACEHOLDERS.items():
        command = command.replace(placeholder, variable)
    return WRAPPER.format(
        app_name=app.name.replace("\n", " "),
        app_slug=shlex.quote(app.slug),
        port=int(app.port),
        command=command.strip(),
    )


def session_app_get(*, slug: str) -> SessionApp:
    """An enabled app by slug; 400 naming `app` otherwise."""
    app = SessionApp.objects.filter(slug=str(slug), enabled=True).first()
    if app is None:
        known = ", ".join(SessionApp.objects.filter(enabled=True).values_list("slug", flat=True))
        raise InvalidJob(f"Unknown app '{slug}' (available: {known or 'none'})", field="app")
    return app


def _check_port(app: SessionApp, port: int | None) -> None:
    if port is None:
        return
    if app.port == 0:
        raise InvalidJob(
            f"App '{app.slug}' picks a free port on the node when it starts; "
            f"it does not listen on a port you choose ({port})",
            field="port",
        )
    if port != app.port:
        raise InvalidJob(
            f"App '{app.slug}' listens on port {app.port}, not {port}",
            field="port",
        )


@transaction.atomic
def session_start(
    *,
    user: User,
    project: Project,
    cluster: Cluster,
    app: str,
    gpus: int = 0,
    gpu_type: str = "",
    cpus: int = 1,
    memory_mb: int = 1024,
    time_limit_minutes: int = 60,
    partition: str = "",
    port: int | None = None,
    shared_with_managers: bool = False,
    idempotency_key: str = "",
) -> Job:
    """Start a session of `app`: a job of kind session, estimated, held and forwarded exactly
    as job_submit does (a bad app, port or limit is a 400 and nothing is held)."""
    session_app = session_app_get(slug=app)
    _check_port(session_app, port)
    job = job_submit(
        user=user,
        project=project,
        cluster=cluster,
        draft=JobDraft(
            name=f"session-{session_app.slug}",
            script=session_script(app=session_app),
            partition=partition,
            gpus=gpus,
            gpu_type=gpu_type,
            cpus=cpus,
            memory_mb=memory_mb,
            time_limit_minutes=time_limit_minutes,
        ),
        idempotency_key=idempotency_key,
    )
    # The kind marks the job as a session for backends that build its network (Kubernetes:
    # JobSpec.session_port); the user's env never does (GPUC_* names are the portal's).
    if job.kind != Job.Kind.SESSION:
        Job.objects.filter(pk=job.pk).update(kind=Job.Kind.SESSION)
        job.kind = Job.Kind.SESSION
    Session.objects.get_or_create(
        job=job, defaults={"app": session_app, "shared_with_managers": shared_with_managers}
    )
    return job


@dataclass(frozen=True)
class SessionInfo:
    host: str
    port: int
    token: str


def parse_session_file(data: bytes) -> SessionInfo | None:
    """{host, port, token} as the wrapper wrote them; None if malformed (never trusted)."""
    try:
        raw = json.loads(data.decode("utf-8"))
        host, port, token = str(raw["host"]), int(raw["port"]), str(raw["token"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not HOST_RE.match(host) or not 0 < port < 65536 or not TOKEN_RE.match(token):
        return None
    return SessionInfo(host=host, port=port, token=token)


def session_locate(*, session: Session) -> Session:
    """Where a running session listens: read once from its job's session.json through the
    backend (outside any transaction), then stored. Unchanged while the file is not there."""
    if session.upstream and session.token:
        return session
    job = session.job
    if job.state != Job.State.RUNNING or not job.backend_id:
        return session
    try:
        data = get_backend(job.cluster).read_session_file(job_ref(job))
    except (FileNotFoundError, NotADirectoryError, BackendUnavailable):
        return session
    except (BackendError, OSError):
        logger.exception("Cannot read the session file of job %s", job.uuid)
        return session
    info = parse_session_file(data)
    if info is None:
        logger.warning("Session file of job %s is malformed", job.uuid)
        return session
    Session.objects.filter(pk=session.pk).update(
        host=info.host, port=info.port, token=info.token, reported_at=timezone.now()
    )
    session.host, session.port, session.token = info.host, info.port, info.token
    return session


def session_may_open(*, user: User, session: Session) -> bool:
    """The owner; a PI or manager of the project when the owner shares it."""
    if not user.is_authenticated or not user.is_active:
        return False
    job = session.job
    if job.user_id == user.pk:
        return True
    if not session.shared_with_managers:
        return False
    return ProjectMember.objects.filter(
        project_id=job.project_id,
        user=user,
        role__in=[ProjectMember.Role.PI, ProjectMember.Role.MANAGER],
    ).exists()


@transaction.atomic
def session_share(*, user: User, session: Session, shared: bool) -> Session:
    """The owner shares the session with the project's managers (or stops sharing)."""
    if session.job.user_id != user.pk:
        raise JobNotFound("No such session")
    Session.objects.filter(pk=session.pk).update(shared_with_managers=shared)
    session.shared_with_managers = shared
    return session


# --- idle sessions --------------------------------------------------------------------------

ACTIVITY_WRITE_EVERY = timedelta(seconds=30)
DEFAULT_IDLE_MINUTES = 30


def session_touch(*, session: Session) -> None:
    """Record activity through the proxy (at most one write per ACTIVITY_WRITE_EVERY)."""
    now = timezone.now()
    Session.objects.filter(pk=session.pk).filter(
        Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=now - ACTIVITY_WRITE_EVERY)
    ).update(last_activity_at=now)


# With no cluster declaring max_session_idle_minutes, a project may not ask for more than a day.
IDLE_CEILING_MINUTES = 24 * 60


def _cluster_ceiling(cluster: Cluster) -> int | None:
    ceiling = cluster.options.get("max_session_idle_minutes") if cluster.options else None
    if isinstance(ceiling, int) and not isinstance(ceiling, bool) and ceiling > 0:
        return ceiling
    return None


def idle_ceiling_minutes() -> int:
    """The most a project may set: the largest maximum an enabled cluster declares (each
    cluster still caps its own sessions at its own maximum), or IDLE_CEILING_MINUTES."""
    ceilings = [
        c for c in map(_cluster_ceiling, Cluster.objects.filter(enabled=True)) if c is not None
    ]
    return max(ceilings) if ceilings else IDLE_CEILING_MINUTES


def project_idle_minutes(*, project: Project) -> int:
    """The project's idle limit as its managers set it, else SESSIONS_IDLE_MINUTES (30)."""
    row: ProjectSessionSettings | None
    if Project.session_settings.is_cached(project):  # select_related: no query (None: no row)
        row = getattr(project, "session_settings", None)
    else:
        row = ProjectSessionSettings.objects.filter(project=project).only("idle_minutes").first()
    if row is not None:
        return int(row.idle_minutes)
    return int(getattr(settings, "SESSIONS_IDLE_MINUTES", DEFAULT_IDLE_MINUTES))


def idle_limit(cluster: Cluster, *, project: Project | None = None) -> timedelta:
    """The project's idle limit (default SESSIONS_IDLE_MINUTES, 30), never above the
    cluster's max_session_idle_minutes."""
    if project is not None:
        minutes = project_idle_minutes(project=project)
    else:
        minutes = int(getattr(settings, "SESSIONS_IDLE_MINUTES", DEFAULT_IDLE_MINUTES))
    ceiling = _cluster_ceiling(cluster)
    if ceiling is not None:
        minutes = min(minutes, ceiling)
    return timedelta(minutes=minutes)


@transaction.atomic
def project_idle_limit_set(
    *, actor: User, project: Project, idle_minutes: int
) -> ProjectSessionSettings:
    """A project manager sets how long the project's sessions may sit idle (1 minute up to
    the clusters' maximum, idle_ceiling_minutes). Anyone else: PermissionDenied."""
    if not can_manage_project(actor, project):
        raise PermissionDenied(
            f"Only the PI or a manager of project '{project.name}' may set its idle limit"
        )
    ceiling = idle_ceiling_minutes()
    if isinstance(idle_minutes, bool) or not isinstance(idle_minutes, int) or idle_minutes < 1:
        raise InvalidIdleLimit(
            "The idle limit must be a whole number of minutes, at least 1.", field="idle_minutes"
        )
    if idle_minutes > ceiling:
        raise InvalidIdleLimit(
            f"An idle limit of {idle_minutes} minutes is above the maximum of {ceiling} minutes.",
            field="idle_minutes",
            maximum=ceiling,
        )
    row, _ = ProjectSessionSettings.objects.update_or_create(
        project=project,
        defaults={"idle_minutes": idle_minutes, "updated_by": actor, "updated_at": timezone.now()},
    )
    return row


def app_reports_busy(*, session: Session) -> bool:
    """The app says work is under way (Jupyter: a kernel whose execution_state is busy).
    False when it has no activity_path, is not located or does not answer."""
    app = session.app
    if not app.activity_path or not session.upstream or not session.token:
        return False
    url = f"http://{session.upstream}/sessions/{session.job.uuid}/{app.activity_path}"
    headers = {"Authorization": f"{app.token_scheme} {session.token}"} if app.token_scheme else {}
    try:
        answer = requests.get(url, headers=headers, timeout=5)
        items = answer.json() if answer.status_code == HTTPStatus.OK else []
    except (requests.RequestException, ValueError):
        return False
    return isinstance(items, list) and any(
        isinstance(item, dict) and item.get("execution_state") == "busy" for item in items
    )


def sessions_stop_idle(*, now: datetime | None = None) -> list[Job]:
    """Stop running sessions idle for longer than their cluster's idle limit (no request
    through the proxy since then, and no busy kernel where the app reports it): the job is
    cancelled on the cluster, and the sync charges what it ran and releases the rest of its
    hold. Returns the jobs asked to stop. Network calls happen outside any transaction."""
    now = now or timezone.now()
    stopped: list[Job] = []
    candidates = Session.objects.select_related(
        "job", "job__cluster", "job__user", "job__project__session_settings", "app"
    ).filter(job__kind=Job.Kind.SESSION, job__state=Job.State.RUNNING)
    for session in candidates:
        job = session.job
        since = session.last_activity_at or job.started_at or job.created_at
        if now - since <= idle_limit(job.cluster, project=job.project):
            continue
        if app_reports_busy(session=session):
            Session.objects.filter(pk=session.pk).update(last_activity_at=now)
            continue
        if job.user is None:  # a session always has its owner; never stop a stray one
            continue
        minutes = int((now - since).total_seconds() // 60)
        JobEvent.objects.create(
            job=job,
            from_state=job.state,
            to_state=job.state,
            message=f"Idle for {minutes} minutes: stopping the session",
        )
        try:
            stopped.append(job_cancel(user=job.user, job=job))
        except DomainError:
            logger.exception("Could not stop idle session %s", job.uuid)
        else:
            notify_session_stopped_idle(job, idle_minutes=minutes)
    return stopped
