"""Production mode as the README deploys it: DJANGO_DEBUG=false, collectstatic with the manifest
storage, `check --deploy`, gunicorn with deploy/gunicorn.conf.py, and pages fetched through it.

The server runs in its own process on the test database (committed rows only, hence a
transactional test), behind the TLS-terminating proxy it expects: every request says
`X-Forwarded-Proto: https`, so secure cookies and HTTPS CSRF checks are the real ones.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlencode

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from tests import factories
from tests.conftest import database_url, wait_until

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]
GUNICORN = Path(sys.executable).parent / "gunicorn"
PASSWORD = "a production smoke-test passphrase 42"
STARTUP_SECONDS = 20

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    """PRODUCTION_SMOKE_PORT when set (shared machines hand out port ranges), else any free one."""
    if port := os.environ.get("PRODUCTION_SMOKE_PORT"):
        return int(port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("static")


@pytest.fixture
def gunicorn_workers() -> int:
    return 1


@pytest.fixture
def production_env(static_root: Path, tmp_path: Path, gunicorn_workers: int) -> dict[str, str]:
    if connection.vendor != "postgresql":
        pytest.skip("the production smoke test serves the PostgreSQL test database")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GUNICORN_"))}
    env.update(
        DJANGO_DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url(),
        STATIC_ROOT=str(static_root),
        GPUC_VAR_DIR=str(tmp_path / "var"),
        GUNICORN_WORKERS=str(gunicorn_workers),
        GUNICORN_THREADS="2",
    )
    return env


@pytest.fixture
def collected(production_env: dict[str, str]) -> Path:
    """STATIC_ROOT after `collectstatic` with the manifest storage (once per module)."""
    static_root = Path(production_env["STATIC_ROOT"])
    manifest = static_root / "staticfiles.json"
    if not manifest.exists():
        result = _manage(production_env, "collectstatic", "--noinput")
        assert result.returncode == 0, result.stderr
    return manifest


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own manage.py, fixed arguments)
        [*MANAGE, *args], env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )


@dataclass
class ProxiedClient:
    """Just enough of a browser over http.client: cookies (secure ones too, since the proxy
    header makes every request HTTPS to Django), Origin for CSRF, no redirect following."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: str = ""
    ) -> tuple[http.client.HTTPResponse, str]:
        headers = {
            "Host": f"127.0.0.1:{self.port}",
            "X-Forwarded-Proto": "https",
            "Origin": f"https://127.0.0.1:{self.port}",
        }
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response, text


@pytest.fixture
def gunicorn(
    production_env: dict[str, str], collected: Path, tmp_path: Path
) -> Iterator[ProxiedClient]:
    # WhiteNoise indexes STATIC_ROOT when its worker starts: `collected` ran before, as in a deploy.
    port = _free_port()
    errors = tmp_path / "gunicorn.err"
    env = {**production_env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    server = subprocess.Popen(  # noqa: S603 (gunicorn from this virtualenv, fixed arguments)
        [str(GUNICORN), "-c", "deploy/gunicorn.conf.py", "portal.wsgi"],
        env=env,
        cwd=BASE_DIR,
        stdout=(tmp_path / "gunicorn.out").open("w"),  # the access log (accesslog "-")
        stderr=errors.open("w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"gunicorn exited ({server.returncode}): {errors.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not listen on port {port} in {STARTUP_SECONDS}s")
                time.sleep(0.1)
        yield ProxiedClient(port=port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        # gunicorn's workers held connections to the test database; pytest-django drops it
        # at the end of the session and must not find them open.


def test_collectstatic_with_the_manifest_storage_and_check_deploy_pass_in_production_mode(
    production_env, collected
):
    """A vendored file naming a missing one (a source map) fails collectstatic here."""
    deploy = _manage(production_env, "check", "--deploy", "--fail-level", "WARNING")

    manifest = json.loads(collected.read_text())
    assert manifest["paths"]["vendor/htmx-2.0.11.min.js"].startswith("vendor/htmx-2.0.11.min.")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "no issues" in deploy.stdout


def test_gunicorn_in_production_mode_serves_sign_in_dashboard_api_docs_and_hashed_static_files(
    production_env, gunicorn
):
    user = factories.UserFactory(username="prod", email="prod@uni.example")
    # The server hashes with the production hashers, not the tests' fast one.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, secrets.token_hex(8))
    user.save(update_fields=["password"])
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    client = gunicorn

    anonymous, _ = client.request("GET", "/")
    login_page, login_html = client.request("GET", "/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_html)
    assert csrf is not None
    signed_in, _ = client.request(
        "POST",
        "/accounts/login/",
        urlencode({"csrfmiddlewaretoken": csrf.group(1), "login": "prod", "password": PASSWORD}),
    )
    dashboard, dashboard_html = client.request("GET", "/")
    docs, docs_html = client.request("GET", "/api/docs/")
    css = re.search(r'href="/static/(css/portal\.[0-9a-f]{12}\.css)"', dashboard_html)
    assert css is not None, "the page links the hashed (manifest) name of the portal stylesheet"
    static, static_body = client.request("GET", f"/static/{css.group(1)}")

    assert anonymous.status == HTTPStatus.FOUND
    assert anonymous.headers["Location"].startswith("/accounts/login/")
    assert login_page.status == HTTPStatus.OK
    assert "Secure" in (login_page.headers.get("Set-Cookie") or "")
    assert signed_in.status == HTTPStatus.FOUND, "sign-in through allauth over the proxy"
    assert dashboard.status == HTTPStatus.OK
    assert "<h1>Dashboard</h1>" in dashboard_html
    assert "strict-transport-security" in {k.lower() for k in dashboard.headers}
    assert "script-src 'self'" in dashboard.headers["Content-Security-Policy"]
    assert docs.status == HTTPStatus.OK
    assert "swagger-ui" in docs_html
    assert static.status == HTTPStatus.OK
    assert "max-age=315360000" in static.headers["Cache-Control"]
    assert static_body


def test_gunicorn_writes_an_access_log_line_per_request(gunicorn, tmp_path):
    """In the Common Log Format gunicorn writes by default (portal.access_log.AccessLogger)."""
    response, _ = gunicorn.request("GET", "/api/docs/?from=test")
    line = re.compile(
        r'127\.0\.0\.1 - - \[[^]]+\] "GET /api/docs/\?from=test HTTP/1\.1" 200 \d+ "-" "[^"]*"'
    )
    log = tmp_path / "gunicorn.out"

    # The worker writes the line after the answer.
    wait_until(
        lambda: any(map(line.fullmatch, log.read_text().splitlines())),
        timeout=10, every=0.05, what=log.read_text,
    )  # fmt: skip
    assert response.status == HTTPStatus.OK


def _listening(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (the kernel's table of TCP sockets)."""
    local = f"0100007F:{port:04X}"
    rows = [row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[1] == local and row[3] == "0A")


@pytest.mark.parametrize("gunicorn_workers", [2])
def test_each_gunicorn_worker_listens_on_its_own_socket(gunicorn_workers, gunicorn):
    """reuse_port: the kernel spreads new connections over the workers' sockets. On one shared
    socket, the first worker to wake took a script's kept-alive connections, often all of them."""
    # The second worker may still be booting.
    wait_until(
        lambda: _listening(gunicorn.port) >= gunicorn_workers,
        timeout=STARTUP_SECONDS, every=0.1,
        what=lambda: f"{gunicorn_workers} listening sockets, not {_listening(gunicorn.port)}",
    )  # fmt: skip
    response, _ = gunicorn.request("GET", "/healthz")

    assert _listening(gunicorn.port) == gunicorn_workers
    assert response.status == HTTPStatus.OK
