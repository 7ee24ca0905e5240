"""Jobs fixtures: cluster accounts, a simulated cluster on a manual clock, a local cluster."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from jobs.backends import get_backend
from jobs.backends.simulated import SimulatedBackend
from jobs.models import ClusterAccount, Job
from quotas.models import Allocation, Cluster, Rate
from quotas.services import ledger_credit
from tests import factories
from tests.conftest import signed_in


@pytest.fixture
def sim_cluster(cluster: Cluster) -> Cluster:
    """The conftest's simulated cluster (2 SU/h100-hour, 0.1 SU/CPU-hour, 0.01 SU/GB-hour)
    on a manual clock, with 8 GPUs and fresh in-memory state."""
    cluster.options = {"gpu_types": ["h100", "a100"], "gpus": 8, "clock": "manual"}
    cluster.save()
    SimulatedBackend.reset(cluster.name)
    yield cluster
    SimulatedBackend.reset(cluster.name)


@pytest.fixture
def sim(sim_cluster: Cluster) -> SimulatedBackend:
    backend = get_backend(sim_cluster)
    assert isinstance(backend, SimulatedBackend)
    return backend


@pytest.fixture
def accounts(alice: User, bob: User, cluster: Cluster) -> None:
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    ClusterAccount.objects.create(user=bob, cluster=cluster, username="bob", uid=1002)


@pytest.fixture
def local_cluster(db: None, tmp_path, settings, tenant, alice: User, bob: User) -> Cluster:
    """A local-backend cluster rooted in a temporary directory, priced at 3600 SU per
    CPU-hour (1 SU per CPU-second) so that charges are easy to check, with 100 SU for alice's
    project and cluster accounts for alice and bob."""
    settings.GPUC_LOCAL_BACKEND_ENABLED = True
    c = factories.ClusterFactory(
        name="local",
        kind=Cluster.Kind.LOCAL,
        options={"root": str(tmp_path / "jobs"), "gpu_types": ["fake"]},
    )
    factories.RateFactory(cluster=c, resource=Rate.Resource.CPU_HOUR, su_per_unit=Decimal(3600))
    factories.RateFactory(
        cluster=c, resource=Rate.Resource.GPU_HOUR, gpu_type="", su_per_unit=Decimal(7200)
    )
    alloc = factories.AllocationFactory(project=tenant.project, clusters=[c])
    ledger_credit(actor=None, allocation=alloc, amount=Decimal(100000), key=f"local-{alloc.pk}")
    ClusterAccount.objects.create(user=alice, cluster=c, username="alice", uid=1001)
    ClusterAccount.objects.create(user=bob, cluster=c, username="bob", uid=1002)
    return c


@pytest.fixture
def files_url(tenant, local_cluster) -> str:
    return f"/api/v1/projects/{tenant.project.uuid}/files/"


@pytest.fixture
def folder(local_cluster, tmp_path) -> Path:
    """The project's folder on the local cluster, as the portal makes it on
    first use (storage tests)."""
    return tmp_path / "jobs" / "projects" / "vision-lab.folding"


@pytest.fixture
def submit(alice: User, tenant, allocation: Allocation, accounts: None):
    """Submit a job as alice on the given cluster (default: the simulated one)."""

    def _submit(cluster: Cluster, *, user: User | None = None, **fields: Any) -> Job:
        return factories.submitted_job(
            user=user or alice, project=tenant.project, cluster=cluster, **fields
        )

    return _submit


@pytest.fixture
def web_alice(alice: User) -> Client:
    return signed_in(alice)


@pytest.fixture
def web_mallory(mallory: User, mallory_tenant: Any) -> Client:
    return signed_in(mallory)
