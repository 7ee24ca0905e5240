"""`gpuc session` against the real API served by live_server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from accounts.services import api_token_create
from jobs.models import ClusterAccount, Job
from portal import cli
from quotas.models import Hold
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gpuc(
    live_server: Any,
    alice: User,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    monkeypatch.setenv("GPUC_CONFIG", str(tmp_path / "gpuc.json"))
    for name in ("GPUC_URL", "GPUC_TOKEN", "GPUC_PROJECT", "GPUC_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    _, raw = api_token_create(actor=alice, name="cli")
    assert cli.main(["login", "--url", live_server.url, "--token", raw]) == 0
    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def account(alice: User, cluster: Any, allocation: Any) -> None:
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)


def test_gpuc_starts_a_session_and_lists_it_with_where_to_open_it(
    gpuc, live_server, account, tenant
):
    code, out, _ = gpuc("session", "apps")
    assert code == 0 and "jupyterlab" in out

    code, out, err = gpuc(
        "session", "start", "jupyterlab", "-t", "45", "-p", "folding", "-c", "sim"
    )

    assert code == 0, err
    job = Job.objects.get(kind=Job.Kind.SESSION)
    assert job.time_limit_minutes == 45 and job.hold is not None
    assert f"{live_server.url}/sessions/{job.uuid}/" in out
    code, out, _ = gpuc("session", "ls")
    assert code == 0
    assert str(job.uuid)[:8] in out and "jupyterlab" in out


def test_gpuc_session_with_an_unknown_app_is_refused_with_nothing_held(gpuc, account, tenant):
    code, _, err = gpuc("session", "start", "rstudio", "-t", "45", "-p", "folding", "-c", "sim")
    assert code != 0
    assert "Unknown app 'rstudio'" in err
    assert not Job.objects.exists() and not Hold.objects.exists()
