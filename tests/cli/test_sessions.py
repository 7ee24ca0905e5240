"""`gpuc session` against the real API served by live_server."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import User
from jobs.models import ClusterAccount, Job
from quotas.models import Hold
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)

pytestmark = pytest.mark.django_db(transaction=True)


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
