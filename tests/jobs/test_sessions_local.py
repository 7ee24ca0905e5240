"""A session on the local backend (what `make run` uses): the wrapper runs a small app, reports
where it listens in session.json, and the portal reads it through the backend."""

from __future__ import annotations

import time
from http import HTTPStatus

import requests

from jobs.models import Job, Session, SessionApp
from jobs.services import cluster_sync, job_cancel, job_forward
from jobs.services.sessions import session_locate, session_start
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)

# A stand-in app: answers GET / only with the secret the proxy would add.
APP = (
    "exec python3 -c 'import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    '        ok = self.headers.get("Authorization") == "token " + os.environ["T"]\n'
    "        self.send_response(200 if ok else 403); self.end_headers()\n"
    "http.server.HTTPServer((sys.argv[2], int(sys.argv[1])), H).serve_forever()' {port} {host}"
)


def test_a_local_session_reports_where_it_listens_and_answers_with_its_secret(
    local_cluster, tenant, alice
):
    SessionApp.objects.create(slug="echo", name="Echo", command=f"T={{token}} {APP}")
    job = session_start(
        user=alice, project=tenant.project, cluster=local_cluster, app="echo", time_limit_minutes=5
    )
    job_forward(job_id=job.pk)
    try:
        deadline = time.monotonic() + 60
        session = Session.objects.select_related("job").get(job=job)
        while not session.upstream and time.monotonic() < deadline:
            cluster_sync(cluster=local_cluster)
            session = session_locate(
                session=Session.objects.select_related("job", "job__cluster").get(job=job)
            )
            time.sleep(0.3)
        assert session.upstream.startswith(("127.", "10.", "172.", "192."))
        assert len(session.token) == 64
        session.refresh_from_db()
        assert session.reported_at is not None

        url = f"http://{session.upstream}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(
                    url, headers={"Authorization": f"token {session.token}"}, timeout=5
                )
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the app never listened"
                time.sleep(0.3)
        assert answer.status_code == HTTPStatus.OK
        assert requests.get(url, timeout=5).status_code == HTTPStatus.FORBIDDEN
    finally:
        job.refresh_from_db()
        if not job.is_final:
            job_cancel(user=alice, job=job)
    deadline = time.monotonic() + 30
    while not job.is_final and time.monotonic() < deadline:
        cluster_sync(cluster=local_cluster)
        job.refresh_from_db()
        time.sleep(0.3)
    assert job.state == Job.State.CANCELLED
