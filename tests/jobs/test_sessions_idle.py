"""Idle sessions stop by themselves: no request through the proxy for the idle limit (and no
busy kernel where the app reports one) -> the job is cancelled, charged for what it ran and
the rest of its hold released."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.utils import timezone

from jobs.models import Job, Session
from jobs.services import cluster_sync
from jobs.services.sessions import idle_limit, sessions_stop_idle
from quotas.models import Hold
from tests.jobs import session_apps
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)


@pytest.fixture
def running_session(alice, tenant, sim_cluster, allocation, accounts) -> Session:
    return session_apps.running_session(user=alice, project=tenant.project, cluster=sim_cluster)


def test_a_session_idle_past_the_limit_is_stopped_charged_and_the_rest_released(
    running_session, sim, sim_cluster, mailoutbox, django_capture_on_commit_callbacks
):
    job = running_session.job
    sim.advance(40 * 60)
    Session.objects.filter(pk=running_session.pk).update(
        last_activity_at=timezone.now() - timedelta(minutes=31)
    )

    with django_capture_on_commit_callbacks(execute=True):
        stopped = sessions_stop_idle()

    assert [j.pk for j in stopped] == [job.pk]
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.finalized_at is not None
    assert 0 < job.charged_cost < job.estimated_cost
    assert job.hold.state != Hold.State.OPEN
    assert "Idle for 31 minutes" in " ".join(job.events.values_list("message", flat=True))
    [mail] = mailoutbox
    assert mail.to == ["alice@uni.example"]
    assert "JupyterLab session was stopped after 31 idle minutes" in mail.subject
    assert f"/jobs/{job.uuid}/" in mail.body


def test_an_active_session_is_not_stopped(running_session, mailoutbox):
    Session.objects.filter(pk=running_session.pk).update(
        last_activity_at=timezone.now() - timedelta(minutes=5)
    )
    assert sessions_stop_idle() == []
    assert not mailoutbox
    running_session.job.refresh_from_db()
    assert running_session.job.state == Job.State.RUNNING


def test_the_clusters_ceiling_caps_the_idle_limit(sim_cluster, settings):
    settings.SESSIONS_IDLE_MINUTES = 30
    assert idle_limit(sim_cluster) == timedelta(minutes=30)
    sim_cluster.options = {**sim_cluster.options, "max_session_idle_minutes": 10}
    assert idle_limit(sim_cluster) == timedelta(minutes=10)


def test_a_session_whose_kernel_is_busy_is_not_stopped(running_session):
    """The app (here a stand-in answering Jupyter's api/kernels) says a kernel is busy."""
    job = running_session.job
    seen: list[str] = []

    class Kernels(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers.get('Authorization')}")
            body = json.dumps([{"id": "k", "execution_state": "busy"}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Kernels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token = "cd" * 32
        Session.objects.filter(pk=running_session.pk).update(
            host="127.0.0.1",
            port=server.server_address[1],
            token=token,
            last_activity_at=timezone.now() - timedelta(hours=1),
        )
        assert sessions_stop_idle() == []
    finally:
        server.shutdown()
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    assert seen == [f"/sessions/{job.uuid}/api/kernels token {token}"]
    running_session.refresh_from_db()
    assert timezone.now() - running_session.last_activity_at < timedelta(minutes=1)
