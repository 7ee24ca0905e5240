"""End to end on Kubernetes: a Job created with kubectl in a project's namespace is found by
the sync, recorded as a direct portal job and charged once from its own record, next to the
portal's own jobs (which stay portal jobs, charged once through their holds)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest

from jobs.backends.base import AccountSpec
from jobs.backends.kubernetes import KubernetesBackend
from jobs.models import DirectWatermark, Job, SchedulerAccount
from jobs.services import cluster_sync, job_forward
from jobs.services.account_names import qualified_project
from jobs.services.direct import direct_key
from quotas.models import Allocation, Cluster, LedgerEntry
from quotas.reconcile import reconcile_ledger
from tests.conftest import Tenant
from tests.jobs.kubernetes.conftest import create_direct_job, direct_job
from tests.k8s_server import FakeKubernetes

JOBS = "/apis/batch/v1/jobs"


@pytest.fixture
def namespace(
    tenant: Tenant,
    k8s_cluster: Cluster,
    k8s_allocation: Allocation,
    kube_backend: KubernetesBackend,
) -> str:
    """The project's account on the cluster: its SchedulerAccount and its namespace."""
    project = qualified_project(tenant.project)
    name = kube_backend.account_name(project)
    SchedulerAccount.objects.create(
        project=tenant.project, cluster=k8s_cluster, name=name, state=SchedulerAccount.State.ACTIVE
    )
    assert kube_backend.push_accounts([AccountSpec(name=name, project=project, gpu_cap=4)]) == {}
    return name


def _direct_charges() -> list[tuple[str, Decimal]]:
    return list(
        LedgerEntry.objects.filter(
            kind=LedgerEntry.Kind.CHARGE, idempotency_key__startswith="direct:"
        )
        .order_by("pk")
        .values_list("idempotency_key", "amount")
    )


def test_a_kubectl_job_is_recorded_as_a_direct_job_and_charged_once_across_two_ticks(
    api_alice,
    alice,
    tenant: Tenant,
    k8s: FakeKubernetes,
    k8s_cluster: Cluster,
    k8s_allocation: Allocation,
    kubectl: Any,
    namespace: str,
):
    response = api_alice.post(
        "/api/v1/jobs/",
        {
            "project": "folding",
            "cluster": "kube",
            "name": "portal-train",
            "script": "sleep 600",
            "gpus": 1,
            "gpu_type": "h100",
            "cpus": 1,
            "memory_mb": 1024,
            "time_limit_minutes": 60,
        },
        format="json",
    )
    assert response.status_code == HTTPStatus.CREATED
    portal_job = Job.objects.get(uuid=response.json()["id"])
    job_forward(job_id=portal_job.pk)
    created = create_direct_job(
        kubectl,
        namespace,
        direct_job(
            "kubectl-train",
            script="echo hi; sleep 1800",
            gpus=2,
            cpu="1500m",
            memory="3Gi",
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            annotations={"gpu-commons/cluster-user": "alice"},
        ),
    )
    k8s.advance(1810)  # both finished: the portal job at +600, the direct one at +1800

    first = cluster_sync(cluster=k8s_cluster)
    between = DirectWatermark.objects.get(cluster=k8s_cluster).since
    k8s.advance(5)  # the second tick's window reaches back over the direct job's end again
    k8s.requests.clear()
    second = cluster_sync(cluster=k8s_cluster)

    assert (first.direct, second.direct) == (1, 0)
    direct = Job.objects.get(origin=Job.Origin.DIRECT)
    backend_id = f"{namespace}/{created['metadata']['uid']}"
    assert direct.backend_id == backend_id
    assert (direct.project_id, direct.user_id, direct.cluster_username) == (
        tenant.project.pk,
        alice.pk,
        "alice",
    )
    assert (direct.name, direct.state, direct.exit_code) == ("kubectl-train", "completed", 0)
    assert (direct.gpus, direct.gpu_type, direct.cpus, direct.memory_mb) == (2, "h100", 2, 3072)
    assert direct.elapsed_seconds == 1800
    assert between < direct.ended_at  # so the second tick listed it again, and skipped it
    assert direct.ended_at - direct.started_at == timedelta(seconds=1800)
    # 0.5 h x (2 GPUs x 2 SU + 2 CPUs x 0.1 SU + 3 GB x 0.01 SU) = 2.115 SU, no hold.
    assert direct.charged_cost == Decimal("2.1150")
    assert direct.hold_id is None
    charges = _direct_charges()
    assert [amount for _, amount in charges] == [Decimal("2.1150")]
    assert charges[0][0].startswith(direct_key(k8s_cluster, backend_id))
    assert list(
        LedgerEntry.objects.filter(job_uuid=direct.uuid, kind=LedgerEntry.Kind.CHARGE).values_list(
            "amount", flat=True
        )
    ) == [Decimal("2.1150")]
    portal_job.refresh_from_db()
    assert (portal_job.origin, portal_job.state) == (Job.Origin.PORTAL, Job.State.COMPLETED)
    assert Job.objects.count() == 2  # the portal's own Job was not taken for direct work
    k8s_allocation.refresh_from_db()
    assert k8s_allocation.charged == portal_job.charged_cost + Decimal("2.1150")
    assert k8s_allocation.held == 0
    assert reconcile_ledger().ok
    # The second tick, with no portal job left to follow, made one call: the Jobs listing.
    assert [(m, p) for m, p, _ in k8s.requests] == [("GET", JOBS)]
