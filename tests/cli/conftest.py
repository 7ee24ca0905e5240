"""The CLI's fixtures: a tiny real HTTP server speaking the API's shape for its client-side
tests, and `gpuc` signed in as alice against the real API (live_server) for the end-to-end ones."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from accounts.models import User
from accounts.services import api_token_create
from jobs.models import ClusterAccount
from portal import cli
from quotas.models import Cluster, Rate
from quotas.services import ledger_credit
from tests import factories

TOKEN = "gpuc_test_secret"


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str  # below /api/v1/, unquoted
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


# (status, JSON-able body or raw bytes), optionally with response headers as a third item
Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class FakeApi:
    url: str = ""
    routes: dict[tuple[str, str], Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Answer `method path` with these answers in turn (the last one repeats)."""
        queue = list(answers)

        def reply(_: Seen) -> Answer:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.routes[(method, path)] = reply

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            seen = Seen(
                method=self.command,
                path=unquote(parts.path).removeprefix("/api/v1/"),
                query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                headers=dict(self.headers.items()),
                body=json.loads(raw) if raw else None,
            )
            api.seen.append(seen)
            extra: dict[str, str] = {}
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = 401, {"detail": "Invalid API token", "code": "authentication_failed"}
            elif route := api.routes.get((seen.method, seen.path)):
                status, body, *more = route(seen)
                extra = more[0] if more else {}
            else:
                status, body = 404, {"detail": "Not found.", "code": "not_found"}
            if isinstance(body, bytes):
                payload, kind = body, "application/octet-stream"
            elif isinstance(body, str):
                payload, kind = body.encode(), "text/html"
            else:
                payload, kind = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

    return Handler


@pytest.fixture(autouse=True)
def _no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpuc waits 1, 2, 4 s between retries of transient failures; tests need not."""
    monkeypatch.setattr("portal.cli.client.RETRY_DELAY", 0)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point gpuc at a fresh configuration file and clear the GPUC_* variables."""
    path = tmp_path / "gpuc" / "config.json"
    monkeypatch.setenv("GPUC_CONFIG", str(path))
    for name in ("GPUC_URL", "GPUC_TOKEN", "GPUC_PROJECT", "GPUC_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def logged_in(api: FakeApi, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    monkeypatch.setenv("GPUC_URL", api.url)
    monkeypatch.setenv("GPUC_TOKEN", TOKEN)
    return api


class Run(NamedTuple):
    """What one `gpuc` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


Gpuc = Callable[..., Run]


@pytest.fixture
def run_gpuc(capsys: pytest.CaptureFixture[str]) -> Gpuc:
    """Run `gpuc` (cli.main) with the configuration the test has set up."""

    def run(*argv: object) -> Run:
        capsys.readouterr()  # only this command's output
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def gpuc(live_server: Any, alice: User, config_file: Path, run_gpuc: Gpuc) -> Gpuc:
    """Run `gpuc` as alice: logged in through `gpuc login` with a token made by the service."""
    _, raw = api_token_create(actor=alice, name="cli")
    assert run_gpuc("login", "--url", live_server.url, "--token", raw).code == 0
    return run_gpuc


@pytest.fixture
def local(tmp_path: Path, settings: Any, tenant: Any, alice: User) -> Cluster:
    """A local-backend cluster priced at 3600 SU per CPU-hour (1 SU per CPU-second),
    with 1000 SU for alice's project and a cluster account for alice."""
    settings.GPUC_LOCAL_BACKEND_ENABLED = True
    cluster = factories.ClusterFactory(
        name="local", kind=Cluster.Kind.LOCAL, options={"root": str(tmp_path / "jobs")}
    )
    factories.RateFactory(
        cluster=cluster, resource=Rate.Resource.CPU_HOUR, su_per_unit=Decimal(3600)
    )
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(1000), key="cli-e2e")
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    return cluster
