"""`gpuc access` end to end: the CLI against the real API (live_server), a real Celery worker
on the Redis broker provisioning through the ldap provisioner into the real slapd."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from accounts.models import User
from jobs.models import ClusterAccessRequest, ClusterAccount
from portal.celery import app as celery_app
from quotas.models import Allocation, Cluster
from tests.cli.conftest import Gpuc
from tests.ldap_site import Corner

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.ldap]


@pytest.fixture
def worker() -> Iterator[None]:
    celery_app.control.purge()
    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
        yield
    celery_app.control.purge()


@pytest.fixture
def directory_cluster(cluster: Cluster, allocation: Allocation, ldap_corner: Corner) -> Cluster:
    cluster.options = {
        "access_policy": "auto",
        "provisioner": "ldap",
        "provisioner_options": ldap_corner.options(),
    }
    cluster.save()
    return cluster


def test_gpuc_access_request_is_provisioned_by_a_real_worker_and_listed(
    # The worker first: Celery's log handlers bind to the stderr of the moment, which must be
    # pytest's own, not the capture that `gpuc` (capsys) opens and closes with this test.
    worker: None,
    directory_cluster: Cluster,
    ldap_corner: Corner,
    alice: User,
    tenant: Any,
    gpuc: Gpuc,
) -> None:
    code, out, err = gpuc("access", "request", "-c", "sim", "-p", "folding")

    assert (code, err) == (0, "")
    # The answer reads the request back after queuing its provisioning: a worker as quick as
    # this one may have taken it up by then.
    assert "alice@sim  approved" in out or "alice@sim  provisioning" in out
    assert "Approved: the account is being created" in out
    deadline = time.monotonic() + 30
    while not ClusterAccount.objects.filter(user=alice).exists():
        assert time.monotonic() < deadline, "the worker did not provision the account"
        time.sleep(0.2)
    request = ClusterAccessRequest.objects.get(user=alice)
    assert request.state == ClusterAccessRequest.State.PROVISIONED
    assert list(ldap_corner.entries()) == ["alice"]

    code, out, _ = gpuc("access", "ls")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ID",
        "CLUSTER",
        "PROJECT",
        "USER",
        "STATE",
        "ASKED",
        "WHY",
    ]
    assert "sim" in out and "alice" in out and "provisioned" in out

    code, _, err = gpuc("access", "request", "-c", "sim", "-p", "folding")
    assert code == 1
    assert "already have the account alice" in err


def test_gpuc_access_request_without_a_cluster_is_a_usage_error(
    run_gpuc: Gpuc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GPUC_TOKEN", "gpuc_x_y")
    monkeypatch.setenv("GPUC_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("GPUC_CLUSTER", raising=False)

    code, _, err = run_gpuc("access", "request", "-p", "folding")

    assert code == 2
    assert "give --cluster (or set a default: 'gpuc config set cluster" in err
