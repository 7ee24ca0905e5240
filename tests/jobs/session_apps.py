"""The JupyterLab app row as migrations 0011 and 0012 ship it (a transactional test flushes
every table, data migrations' rows included, so session tests make sure it is there), and a
JupyterLab session running on the simulated cluster."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from accounts.models import Project, User
from jobs.models import Job, Session, SessionApp
from jobs.services import cluster_sync, job_forward
from jobs.services.sessions import session_start
from quotas.models import Cluster

_shipped = importlib.import_module("jobs.migrations.0012_sessions_jupyterlab")


@pytest.fixture(autouse=True)
def jupyterlab_app(db: None) -> SessionApp:
    app, _ = SessionApp.objects.get_or_create(
        slug="jupyterlab",
        defaults={
            "name": "JupyterLab",
            "command": _shipped.JUPYTERLAB_COMMAND,
            "port": 0,
            "token_scheme": "token",
            "activity_path": "api/kernels",
        },
    )
    return app


def running_session(
    *,
    user: User,
    project: Project,
    cluster: Cluster,
    time_limit_minutes: int = 120,
    **resources: Any,
) -> Session:
    """A JupyterLab session (two hours unless `resources` say otherwise) started, forwarded and
    synced on the simulated `cluster` until it runs; it runs until stopped (the simulated app
    would otherwise end after 60 s)."""
    cluster.options = {**cluster.options, "default_duration_seconds": 10**6}
    cluster.save()
    job = session_start(
        user=user,
        project=project,
        cluster=cluster,
        app="jupyterlab",
        **{"time_limit_minutes": 120, **resources},
    )
    job_forward(job_id=job.pk)
    cluster_sync(cluster=cluster)
    session = Session.objects.select_related("job", "job__cluster", "job__project").get(job=job)
    assert session.job.state == Job.State.RUNNING
    return session
