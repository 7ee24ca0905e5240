"""A JupyterLab session on the real Slurm, reached through the real proxy: Debian's nginx run
with deploy/sessions/nginx.conf.in in front of the portal (live_server), exactly as in
production. JupyterLab is the venv deploy/sessions/up.sh installs on the node."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from jobs.models import Job, Session
from jobs.services import cluster_sync, job_cancel, job_forward
from jobs.services.sessions import app_reports_busy, sessions_stop_idle
from quotas.models import Allocation, Cluster
from tests.conftest import wait_until
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
JUPYTERLAB = (
    Path(os.environ.get("GPUC_JUPYTERLAB_VENV", "/opt/gpucommons-sessions/jupyterlab"))
    / "bin/jupyter-lab"
)
CONFIG = Path(__file__).resolve().parents[3] / "deploy/sessions/nginx.conf.in"
PROXY_SECRET = secrets.token_hex(16)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Proxy:
    url: str
    prefix: Path

    def log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def proxy(live_server: Any, settings: Any) -> Iterator[Proxy]:
    """nginx with the deploy config, in front of live_server, on a free port."""
    if not os.access(NGINX, os.X_OK) or not JUPYTERLAB.exists():
        message = "nginx or JupyterLab missing: run deploy/sessions/up.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    settings.SESSIONS_PROXY_SECRET = PROXY_SECRET
    prefix = Path(tempfile.mkdtemp(prefix="gpuc-nginx-"))
    prefix.chmod(0o755)  # nginx's workers run as nobody
    port = _free_port()
    portal = live_server.url.removeprefix("http://")
    text = (
        CONFIG.read_text()
        .replace("@PREFIX@", str(prefix))
        .replace("@LISTEN@", f"127.0.0.1:{port}")
        .replace("@PORTAL@", portal)
        .replace("@PROXY_SECRET@", PROXY_SECRET)
    )
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    process = subprocess.Popen(  # noqa: S603 (fixed argv)
        [NGINX, "-c", str(conf), "-p", str(prefix)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(prefix / "stderr.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            requests.get(f"{url}/healthz", timeout=2)
        except requests.RequestException:
            assert process.poll() is None, (prefix / "stderr.log").read_text()
            return False
        return True

    wait_until(up, timeout=20, what="nginx to answer")
    yield Proxy(url=url, prefix=prefix)
    process.terminate()
    process.wait(timeout=20)
    shutil.rmtree(prefix, ignore_errors=True)


def _browser(user: User | None) -> requests.Session:
    """A browser signed in to the portal as `user` (its session cookie), or anonymous."""
    browser = requests.Session()
    if user is not None:
        client = Client()
        client.force_login(user)
        browser.cookies.set("sessionid", client.cookies["sessionid"].value)
    return browser


def _execute(ws: websocket.WebSocket, code: str) -> str:
    """Run `code` in the kernel over its channels WebSocket; its execute_result as text."""
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = json.loads(ws.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "execute_result":
            return str(message["content"]["data"]["text/plain"])
        if message["msg_type"] == "error":
            pytest.fail(f"kernel error: {message['content']}")
    pytest.fail("no execute_result within 60 s")


@pytest.mark.django_db(transaction=True)
def test_a_jupyterlab_session_on_slurm_opens_only_for_its_owner_through_the_proxy(
    proxy: Proxy,
    slurm_cluster: Cluster,
    slurm_allocation: Allocation,
    tenant: Any,
    alice: User,
    bob: User,
    mallory: User,
) -> None:
    api = APIClient()
    api.force_authenticate(alice)
    seen: list[str] = []  # every answer alice gets, to look for the app's secret in

    started = api.post(
        "/api/v1/sessions/",
        {
            "app": "jupyterlab",
            "project": str(tenant.project.uuid),
            "cluster": slurm_cluster.name,
            "cpus": 1,
            "memory_mb": 1024,
            "time_limit_minutes": 10,
        },
        format="json",
    )
    assert started.status_code == HTTPStatus.CREATED, started.json()
    seen.append(started.content.decode())
    job = Job.objects.get(uuid=started.json()["id"])
    assert job.kind == Job.Kind.SESSION
    assert job.hold is not None and job.hold.amount == 600  # 10 min of 1 CPU at 1 SU/s
    try:
        job_forward(job_id=job.pk)

        def running() -> bool:
            cluster_sync(cluster=slurm_cluster)
            job.refresh_from_db()
            assert not job.is_final, (job.state, job.state_reason)
            return job.state == Job.State.RUNNING

        wait_until(running, timeout=90, what="the session's job to run")
        owner = _browser(alice)
        status_url = f"{proxy.url}/sessions/{job.uuid}/api/status"

        def answers() -> requests.Response | None:
            response = owner.get(status_url, allow_redirects=False, timeout=10)
            seen.append(response.text + json.dumps(dict(response.headers)))
            return response if response.status_code == HTTPStatus.OK else None

        response = wait_until(
            answers, timeout=120, what=lambda: f"JupyterLab through the proxy: {proxy.log()}"
        )
        assert "kernels" in response.json()  # Jupyter's own status answer

        # Another member of the project (not shared with): the portal's 404.
        member = _browser(bob).get(status_url, allow_redirects=False, timeout=10)
        assert member.status_code == HTTPStatus.NOT_FOUND
        outsider = _browser(mallory).get(status_url, allow_redirects=False, timeout=10)
        assert outsider.status_code == HTTPStatus.NOT_FOUND
        anonymous = _browser(None).get(status_url, allow_redirects=False, timeout=10)
        assert anonymous.status_code == HTTPStatus.FOUND
        assert "/accounts/login/" in anonymous.headers["Location"]
        # The browser cannot ask the portal for the session's secret itself.
        direct = owner.get(
            f"{proxy.url}/sessions-auth/",
            headers={"X-Original-URI": f"/sessions/{job.uuid}/"},
            timeout=10,
        )
        assert direct.status_code == HTTPStatus.NOT_FOUND

        # A kernel over WebSocket through the proxy.
        kernel = owner.post(
            f"{proxy.url}/sessions/{job.uuid}/api/kernels", json={"name": "python3"}, timeout=60
        )
        seen.append(kernel.text + json.dumps(dict(kernel.headers)))
        assert kernel.status_code == HTTPStatus.CREATED, kernel.text
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{proxy.url.rsplit(':', 1)[1]}/sessions/{job.uuid}/api/kernels/"
            f"{kernel.json()['id']}/channels",
            cookie=f"sessionid={owner.cookies['sessionid']}",
            timeout=60,
        )
        try:
            assert _execute(ws, "6*7") == "42"
        finally:
            ws.close()
        # The lab page itself: its page config would carry the token; the proxy blanks it.
        lab = owner.get(f"{proxy.url}/sessions/{job.uuid}/lab", timeout=30)
        assert lab.status_code == HTTPStatus.OK
        seen.append(lab.text + json.dumps(dict(lab.headers)))
        for url in (
            f"/api/v1/sessions/{job.uuid}/",
            "/api/v1/sessions/",
            f"/api/v1/jobs/{job.uuid}/",
            f"/api/v1/jobs/{job.uuid}/log/?stream=stdout",
            f"/api/v1/jobs/{job.uuid}/log/?stream=stderr",
            f"/api/v1/jobs/{job.uuid}/results/",
        ):
            answer = api.get(url)
            assert answer.status_code == HTTPStatus.OK, (url, answer.content)
            seen.append(answer.content.decode())
        assert api.get(f"/api/v1/sessions/{job.uuid}/").json()["session"]["ready"] is True

        token = Session.objects.get(job=job).token
        assert len(token) == 64
        for answer_text in seen:
            assert token not in answer_text
    finally:
        job.refresh_from_db()
        if not job.is_final:
            job_cancel(user=alice, job=job)

    # Once its job has ended, the session answers the portal's page, not a proxy error.
    def ended() -> bool:
        cluster_sync(cluster=slurm_cluster)
        job.refresh_from_db()
        return job.is_final

    wait_until(ended, timeout=90, what="the session's job to end")
    gone = _browser(alice).get(
        f"{proxy.url}/sessions/{job.uuid}/api/status", allow_redirects=False, timeout=10
    )
    assert gone.status_code == HTTPStatus.GONE
    assert "This session has ended" in gone.text


def _start_running_session(
    api: APIClient, tenant: Any, cluster: Cluster, proxy: Proxy, owner: requests.Session
) -> Job:
    started = api.post(
        "/api/v1/sessions/",
        {
            "app": "jupyterlab",
            "project": str(tenant.project.uuid),
            "cluster": cluster.name,
            "cpus": 1,
            "memory_mb": 1024,
            "time_limit_minutes": 10,
        },
        format="json",
    )
    assert started.status_code == HTTPStatus.CREATED, started.json()
    job = Job.objects.get(uuid=started.json()["id"])
    job_forward(job_id=job.pk)
    url = f"{proxy.url}/sessions/{job.uuid}/api/status"

    def answers() -> bool:
        cluster_sync(cluster=cluster)
        job.refresh_from_db()
        assert not job.is_final, (job.state, job.state_reason)
        return owner.get(url, allow_redirects=False, timeout=10).status_code == HTTPStatus.OK

    wait_until(answers, timeout=150, what="the session to answer through the proxy")
    return job


@pytest.mark.django_db(transaction=True)
def test_an_idle_jupyterlab_session_is_stopped_and_refunded_but_not_while_a_kernel_works(
    proxy: Proxy,
    slurm_cluster: Cluster,
    slurm_allocation: Allocation,
    tenant: Any,
    alice: User,
) -> None:
    api = APIClient()
    api.force_authenticate(alice)
    owner = _browser(alice)
    job = _start_running_session(api, tenant, slurm_cluster, proxy, owner)
    try:
        kernel = owner.post(
            f"{proxy.url}/sessions/{job.uuid}/api/kernels", json={"name": "python3"}, timeout=60
        ).json()
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{proxy.url.rsplit(':', 1)[1]}/sessions/{job.uuid}/api/kernels/"
            f"{kernel['id']}/channels",
            cookie=f"sessionid={owner.cookies['sessionid']}",
            timeout=60,
        )
        try:
            assert _execute(ws, "6*7") == "42"
            # A long computation: no request through the proxy, but the kernel is busy.
            ws.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": uuid.uuid4().hex,
                            "username": "test",
                            "session": uuid.uuid4().hex,
                            "msg_type": "execute_request",
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "content": {"code": "import time; time.sleep(25)", "silent": False},
                        "channel": "shell",
                        "buffers": [],
                    }
                )
            )
            wait_until(
                lambda: app_reports_busy(
                    session=Session.objects.select_related("job", "app").get(job=job)
                ),
                timeout=15,
                what="JupyterLab to report the kernel busy",
            )
            long_ago = timezone.now() - timedelta(hours=1)
            Session.objects.filter(job=job).update(last_activity_at=long_ago)
            assert sessions_stop_idle() == []
            job.refresh_from_db()
            assert job.state == Job.State.RUNNING
        finally:
            ws.close()
        # The computation over and nothing through the proxy for the idle limit: stopped.
        wait_until(
            lambda: (
                owner.get(f"{proxy.url}/sessions/{job.uuid}/api/kernels", timeout=10).json()[0][
                    "execution_state"
                ]
                == "idle"
            ),
            timeout=60,
            what="the kernel to finish",
        )
        Session.objects.filter(job=job).update(last_activity_at=timezone.now() - timedelta(hours=1))
        assert [j.pk for j in sessions_stop_idle()] == [job.pk]

        def ended() -> bool:
            cluster_sync(cluster=slurm_cluster)
            job.refresh_from_db()
            return job.finalized_at is not None

        wait_until(ended, timeout=90, what="the idle session's job to end and be charged")
    finally:
        job.refresh_from_db()
        if not job.is_final:
            job_cancel(user=alice, job=job)
    assert job.state == Job.State.CANCELLED
    ran = (job.ended_at - job.started_at).total_seconds()
    # Charged what it ran (1 SU per CPU-second), within the sync's granularity; the rest of
    # the 600 SU hold is released.
    assert job.charged_cost is not None
    assert abs(float(job.charged_cost) - ran) <= 10, (job.charged_cost, ran)
    assert job.charged_cost < job.estimated_cost
    slurm_allocation.refresh_from_db()
    assert slurm_allocation.held == 0
    assert "Idle for 60 minutes" in " ".join(job.events.values_list("message", flat=True))
