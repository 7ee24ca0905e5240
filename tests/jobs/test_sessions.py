"""Interactive sessions without a real app: starting one (estimate and hold as for a job, bad
input refused with nothing held), the proxy's auth answer and the portal's page behind it,
and the app's secret absent from every answer."""

from __future__ import annotations

import json
import subprocess
import uuid
from http import HTTPStatus
from pathlib import Path

import pytest
from django.test import Client

from jobs.models import Job, Session, SessionApp
from jobs.services.sessions import parse_session_file, session_script
from quotas.models import Allocation, Hold
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)

SECRET = "proxy-secret-for-tests"
TOKEN = "ab" * 32


@pytest.fixture
def body(tenant, sim_cluster, allocation, accounts):
    return {
        "app": "jupyterlab",
        "project": str(tenant.project.uuid),
        "cluster": "sim",
        "cpus": 1,
        "memory_mb": 1024,
        "time_limit_minutes": 60,
    }


@pytest.fixture
def proxy(settings):
    settings.SESSIONS_PROXY_SECRET = SECRET


def _running_session(job_uuid: str, *, located: bool = True) -> Session:
    job = Job.objects.get(uuid=job_uuid)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, backend_id="1")
    if located:
        Session.objects.filter(job=job).update(host="10.0.0.5", port=31337, token=TOKEN)
    return Session.objects.select_related("job").get(job=job)


def _auth(client: Client, job_uuid: str, path: str = "api/status", secret: str = SECRET):
    return client.get(
        "/sessions-auth/",
        headers={
            "X-Original-URI": f"/sessions/{job_uuid}/{path}",
            "X-Session-Proxy-Secret": secret,
        },
    )


def test_jupyterlab_ships_as_an_app(api_alice, db):
    response = api_alice.get("/api/v1/sessions/apps/")
    assert response.status_code == HTTPStatus.OK
    assert [a["slug"] for a in response.json()] == ["jupyterlab"]


def test_a_session_is_a_job_of_kind_session_held_like_any_job(api_alice, body, allocation):
    response = api_alice.post("/api/v1/sessions/", body, format="json")

    assert response.status_code == HTTPStatus.CREATED, response.json()
    data = response.json()
    job = Job.objects.get(uuid=data["id"])
    assert job.kind == Job.Kind.SESSION
    assert job.session.app.slug == "jupyterlab"
    assert data["session"] == {
        "app": "jupyterlab",
        "url": f"/sessions/{job.uuid}/",
        "shared_with_managers": False,
        "ready": False,
    }
    assert job.hold is not None and job.hold.amount == job.estimated_cost > 0
    assert data["held"] == str(job.hold.amount)
    allocation.refresh_from_db()
    assert allocation.held == job.hold.amount


def test_the_script_fills_the_template_with_shell_variables_only():
    app = SessionApp(
        slug="demo", name="Demo", command="serve --port={port} --base={base_url} --t={token}"
    )
    script = session_script(app=app)
    assert 'serve --port="$GPUC_SESSION_PORT" --base="$GPUC_SESSION_BASE_URL"' in script
    assert '--t="$GPUC_SESSION_TOKEN"' in script
    assert "GPUC_SESSION_PORT=0\n" in script  # the wrapper picks a free port


def _wrapper_port(tmp_path: Path, path: str = "/usr/bin:/bin") -> int:
    """The port the session wrapper, run by bash as on a node, writes to session.json."""
    script = tmp_path / "script"
    script.write_text(session_script(app=SessionApp(slug="demo", name="Demo", command="true")))
    job_dir = tmp_path / uuid.uuid4().hex
    job_dir.mkdir()
    env = {"PATH": path, "HOME": str(job_dir), "GPUC_JOB_DIR": str(job_dir)}
    env["GPUC_JOB_UUID"] = job_dir.name
    subprocess.run(["/bin/bash", str(script)], env=env, check=True, timeout=30)  # noqa: S603
    return int(json.loads((job_dir / "session.json").read_text())["port"])


def test_the_wrapper_picks_a_port_below_the_range_of_outgoing_connections(tmp_path: Path):
    """A port no outgoing connection can be holding (a port from that range was taken by one
    in CI: the app could not listen)."""
    first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])

    ports = {_wrapper_port(tmp_path) for _ in range(30)}

    assert all(10000 <= port < first for port in ports), sorted(ports)
    assert len(ports) > 20  # picked at random, not one fixed port


def test_the_wrapper_passes_over_every_port_the_nodes_sockets_table_lists(tmp_path: Path):
    """Told by the sockets table (a grep that finds every port) that all are held, it takes
    none of its 200 draws."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "grep").write_text("#!/bin/sh\nexit 0\n")
    (fake / "grep").chmod(0o755)

    assert _wrapper_port(tmp_path, path=f"{fake}:/usr/bin:/bin") == 0


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"app": "rstudio"}, "app", "Unknown app 'rstudio'"),
        ({"port": 8888}, "port", "does not listen on a port you choose"),
        ({"time_limit_minutes": 100_000}, "time_limit_minutes", "at most"),
    ],
    ids=["unknown-app", "port", "too-long"],
)
def test_bad_session_requests_are_refused_with_nothing_held(
    api_alice, body, allocation, change, field, words
):
    response = api_alice.post("/api/v1/sessions/", {**body, **change}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert words in str(response.json()), response.json()
    assert field in str(response.json())
    assert not Job.objects.exists()
    assert not Hold.objects.exists()
    allocation.refresh_from_db()
    assert allocation.held == 0


def test_a_port_other_than_a_fixed_ports_app_is_refused(api_alice, body, allocation):
    SessionApp.objects.create(slug="rstudio", name="RStudio", command="rserver", port=8787)

    response = api_alice.post(
        "/api/v1/sessions/", {**body, "app": "rstudio", "port": 8888}, format="json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "listens on port 8787, not 8888" in response.json()["detail"]
    assert not Job.objects.exists()


def test_a_disabled_app_is_unknown(api_alice, body, allocation):
    SessionApp.objects.filter(slug="jupyterlab").update(enabled=False)
    response = api_alice.post("/api/v1/sessions/", body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not Allocation.objects.filter(held__gt=0).exists()


def test_the_proxy_learns_upstream_and_secret_for_the_owner_only(
    api_alice, body, proxy, alice, bob, mallory, mallory_tenant
):
    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    _running_session(job_uuid)
    owner, member, outsider = Client(), Client(), Client()
    owner.force_login(alice)
    member.force_login(bob)
    outsider.force_login(mallory)

    answer = _auth(owner, job_uuid)
    assert answer.status_code == HTTPStatus.OK
    # Each request let through counts as the session's activity (for the idle stop).
    assert Session.objects.get(job__uuid=job_uuid).last_activity_at is not None
    assert answer["X-Session-Upstream"] == "10.0.0.5:31337"
    assert answer["X-Session-Authorization"] == f"token {TOKEN}"
    assert _auth(member, job_uuid).status_code == HTTPStatus.FORBIDDEN
    assert _auth(outsider, job_uuid).status_code == HTTPStatus.FORBIDDEN
    assert _auth(Client(), job_uuid).status_code == HTTPStatus.UNAUTHORIZED
    # Without the proxy's secret the endpoint does not exist (the browser must never ask it).
    assert _auth(owner, job_uuid, secret="guess").status_code == HTTPStatus.NOT_FOUND


def test_an_owner_can_share_a_session_with_the_projects_managers(
    api_alice, body, proxy, bob, tenant
):
    from accounts.models import ProjectMember

    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    _running_session(job_uuid)
    ProjectMember.objects.filter(user=bob).update(role=ProjectMember.Role.MANAGER)
    manager = Client()
    manager.force_login(bob)
    assert _auth(manager, job_uuid).status_code == HTTPStatus.FORBIDDEN

    response = api_alice.post(
        f"/api/v1/sessions/{job_uuid}/share/", {"shared": True}, format="json"
    )

    assert response.status_code == HTTPStatus.OK
    assert response.json()["session"]["shared_with_managers"] is True
    assert _auth(manager, job_uuid).status_code == HTTPStatus.OK


def test_only_the_owner_may_share_a_session(api_alice, api_bob, api_mallory, body, mallory_tenant):
    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    assert api_bob.post(
        f"/api/v1/sessions/{job_uuid}/share/", {"shared": True}, format="json"
    ).status_code == (HTTPStatus.NOT_FOUND)
    assert api_mallory.get(f"/api/v1/sessions/{job_uuid}/").status_code == HTTPStatus.NOT_FOUND
    assert not Session.objects.get(job__uuid=job_uuid).shared_with_managers


def test_a_session_not_yet_located_is_not_passed_to_any_app(api_alice, body, proxy, alice):
    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    _running_session(job_uuid, located=False)  # the sim backend writes no session.json
    owner = Client()
    owner.force_login(alice)

    assert _auth(owner, job_uuid).status_code == HTTPStatus.FORBIDDEN
    page = owner.get(f"/sessions/{job_uuid}/lab")
    assert page.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "still starting" in page.content.decode()


def test_the_portal_page_behind_the_proxy(api_alice, body, proxy, alice, mallory, mallory_tenant):
    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    outsider, owner = Client(), Client()
    outsider.force_login(mallory)
    owner.force_login(alice)

    assert outsider.get(f"/sessions/{job_uuid}/").status_code == HTTPStatus.NOT_FOUND
    anonymous = Client().get(f"/sessions/{job_uuid}/api/status")
    assert anonymous.status_code == HTTPStatus.FOUND
    assert "/accounts/login/" in anonymous["Location"]

    Job.objects.filter(uuid=job_uuid).update(state=Job.State.CANCELLED)
    ended = owner.get(f"/sessions/{job_uuid}/api/status")
    assert ended.status_code == HTTPStatus.GONE
    assert "This session has ended" in ended.content.decode()


def test_the_apps_secret_is_in_no_api_answer(api_alice, body, proxy):
    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    _running_session(job_uuid)
    for url in (
        "/api/v1/sessions/",
        f"/api/v1/sessions/{job_uuid}/",
        f"/api/v1/jobs/{job_uuid}/",
        "/api/v1/jobs/",
    ):
        response = api_alice.get(url)
        assert response.status_code == HTTPStatus.OK
        assert TOKEN not in response.content.decode()
    assert api_alice.get(f"/api/v1/sessions/{job_uuid}/").json()["session"]["ready"] is True


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b'{"host": "a b", "port": 1, "token": "' + TOKEN.encode() + b'"}',
        b'{"host": "h", "port": 70000, "token": "' + TOKEN.encode() + b'"}',
        b'{"host": "h", "port": 8888, "token": "short"}',
    ],
)
def test_a_malformed_session_file_is_not_trusted(data):
    assert parse_session_file(data) is None


def test_a_session_file_as_the_wrapper_writes_it_is_read():
    info = parse_session_file(
        b'{"host": "10.1.2.3", "port": 8888, "token": "' + TOKEN.encode() + b'"}\n'
    )
    assert info is not None
    assert (info.host, info.port, info.token) == ("10.1.2.3", 8888, TOKEN)


def _session_form(tenant, **fields: object) -> dict[str, object]:
    """The start-a-session form: JupyterLab, no GPU, 1 CPU, 1 GiB, for the given fields."""
    return {
        "app": "jupyterlab",
        "project": str(tenant.project.uuid),
        "cluster": "sim",
        "gpus": 0,
        "cpus": 1,
        "memory_mb": 1024,
        **fields,
    }


def test_a_member_starts_a_session_from_the_web(
    client, alice, tenant, sim_cluster, allocation, accounts
):
    client.force_login(alice)
    page = client.get("/interactive/")
    assert page.status_code == HTTPStatus.OK
    assert "Start a session" in page.content.decode()

    response = client.post("/interactive/", _session_form(tenant, time_limit_minutes=30))

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[-2000:]
    job = Job.objects.get(kind=Job.Kind.SESSION)
    assert job.user == alice and job.time_limit_minutes == 30 and job.hold is not None
    listing = client.get("/interactive/").content.decode()
    assert f"/sessions/{job.uuid}/" in listing


def test_a_session_asked_for_too_long_on_the_web_is_refused_with_nothing_held(
    client, alice, tenant, sim_cluster, allocation, accounts
):
    client.force_login(alice)
    response = client.post("/interactive/", _session_form(tenant, time_limit_minutes=10**6))
    assert response.status_code == HTTPStatus.OK
    assert "at most" in response.content.decode()
    assert not Job.objects.exists()
    assert not Hold.objects.exists()


def test_the_job_page_of_a_session_offers_to_open_it_to_its_owner_only(
    api_alice, body, client, alice, bob
):
    job_uuid = api_alice.post("/api/v1/sessions/", body, format="json").json()["id"]
    client.force_login(alice)
    page = client.get(f"/jobs/{job_uuid}/").content.decode()
    assert f'href="/sessions/{job_uuid}/"' in page
    assert "Resubmit with changes" not in page
    client.force_login(bob)
    assert f'href="/sessions/{job_uuid}/"' not in client.get(f"/jobs/{job_uuid}/").content.decode()
