"""Project accounts on a Kubernetes cluster through the portal's own account tick
(accounts_sync, the same service and beat task as Slurm's): the project's namespace is its
account, the GPU cap its quota, and "no SU available here" blocks new Pods within one tick."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from jobs.backends.kubernetes import KubernetesBackend
from jobs.models import SchedulerAccount
from jobs.services import account_name, accounts_drift, accounts_sync, scheduler_account_set_cap
from jobs.services.account_names import qualified_project
from jobs.tasks import accounts_sync_all_task
from portal.celery import app as celery_app
from quotas.models import Allocation, Cluster
from quotas.services import allocation_suspend, ledger_credit, ledger_hold
from tests import factories
from tests.conftest import Tenant
from tests.jobs.kubernetes.conftest import create_direct_job, direct_job
from tests.k8s_server import FakeKubernetes

GPU = "requests.nvidia.com/gpu"


def _hard(k8s: FakeKubernetes, namespace: str) -> dict[str, str]:
    return dict(k8s.quotas[(namespace, "gpu-commons")]["spec"]["hard"])


def _phases(k8s: FakeKubernetes, namespace: str) -> dict[str, str]:
    return {
        p["metadata"]["labels"]["job-name"]: p["status"]["phase"]
        for (ns, _), p in k8s.pods.items()
        if ns == namespace
    }


def test_the_account_of_a_project_on_kubernetes_is_its_namespace(
    tenant: Tenant, k8s_cluster: Cluster, k8s_allocation: Allocation, kube_backend
):
    assert accounts_sync(cluster=k8s_cluster).created == 1

    account = SchedulerAccount.objects.get(project=tenant.project, cluster=k8s_cluster)
    namespace = kube_backend.account_name(qualified_project(tenant.project))
    assert account.name == namespace == account_name(k8s_cluster, tenant.project.pk)
    assert account.name != f"gpuc{tenant.project.pk}"  # not Slurm's prefix rule


def test_a_kubernetes_cluster_gets_its_quota_and_block_through_the_same_accounts_tick(
    tenant: Tenant,
    k8s: FakeKubernetes,
    k8s_cluster: Cluster,
    k8s_allocation: Allocation,
    kube_backend: KubernetesBackend,
    kubectl: Any,
):
    first = accounts_sync(cluster=k8s_cluster)

    account = SchedulerAccount.objects.get(project=tenant.project, cluster=k8s_cluster)
    assert (first.created, first.pushed, first.refused) == (1, 1, {})
    assert account.name in k8s.namespaces
    assert _hard(k8s, account.name) == {}  # 1000 SU available, no cap: nothing to limit
    assert account.pushed_blocked is False

    scheduler_account_set_cap(account=account, gpu_cap=3)
    assert accounts_sync(cluster=k8s_cluster).pushed == 1
    assert _hard(k8s, account.name) == {GPU: "3"}
    assert [d.drifted for d in accounts_drift(cluster=k8s_cluster)] == [False]

    allocation_suspend(actor=None, allocation=k8s_allocation, reason="audit")
    tick = accounts_sync(cluster=k8s_cluster)  # one tick

    account.refresh_from_db()
    assert tick.pushed == 1 and account.pushed_blocked is True
    assert _hard(k8s, account.name) == {GPU: "3", "pods": "0"}
    create_direct_job(kubectl, account.name, direct_job("sneaky", script="sleep 60"))
    k8s.advance(5)
    assert _phases(k8s, account.name) == {}  # blocked: no Pod starts
    assert "exceeded quota: gpu-commons" in k8s.events[-1][3]

    more = factories.AllocationFactory(project=tenant.project, clusters=[k8s_cluster])
    ledger_credit(actor=None, allocation=more, amount=Decimal(100), key="more")
    tick = accounts_sync(cluster=k8s_cluster)

    account.refresh_from_db()
    assert tick.pushed == 1 and account.pushed_blocked is False
    assert _hard(k8s, account.name) == {GPU: "3"}
    k8s.advance(15)  # the Job controller retries the Pod once the block is gone
    assert _phases(k8s, account.name) == {"sneaky": "Running"}
    assert [d.drifted for d in accounts_drift(cluster=k8s_cluster)] == [False]


def test_holding_the_last_su_blocks_new_pods_although_the_slurm_style_limit_is_unchanged(
    tenant: Tenant,
    k8s: FakeKubernetes,
    k8s_cluster: Cluster,
    k8s_allocation: Allocation,
):
    accounts_sync(cluster=k8s_cluster)
    account = SchedulerAccount.objects.get(project=tenant.project, cluster=k8s_cluster)
    limit_before = account.pushed_limit_su

    # Portal work holds everything available: consumed + held + available is the same, but
    # no SU is left for new (direct) work.
    ledger_hold(
        actor=None, project=tenant.project, cluster=k8s_cluster, amount=Decimal(1000), key="all"
    )
    tick = accounts_sync(cluster=k8s_cluster)

    account.refresh_from_db()
    assert tick.pushed == 1
    assert account.pushed_limit_su == limit_before == Decimal(1000)
    assert account.pushed_blocked is True
    assert _hard(k8s, account.name) == {"pods": "0"}


@pytest.mark.django_db(transaction=True)
def test_the_accounts_beat_task_pushes_kubernetes_clusters_too(
    tenant: Tenant,
    k8s: FakeKubernetes,
    k8s_cluster: Cluster,
    k8s_allocation: Allocation,
):
    unmanaged = factories.ClusterFactory(
        name="shared-ns",
        kind=Cluster.Kind.KUBERNETES,
        options={**k8s_cluster.options, "namespace": "shared"},
    )
    factories.AllocationFactory(project=tenant.project, clusters=[unmanaged])

    celery_app.control.purge()
    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
        accounts_sync_all_task.delay()  # beat's task: one accounts_sync_task per cluster
        deadline = time.monotonic() + 30
        while not SchedulerAccount.objects.filter(
            cluster=k8s_cluster, pushed_at__isnull=False
        ).exists():
            assert time.monotonic() < deadline, "the worker never pushed the Kubernetes account"
            time.sleep(0.2)

    account = SchedulerAccount.objects.get(project=tenant.project, cluster=k8s_cluster)
    assert account.pushed_at is not None
    assert account.name in k8s.namespaces and (account.name, "gpu-commons") in k8s.quotas
    # The fixed-namespace cluster has no project accounts: nothing made for it.
    assert not SchedulerAccount.objects.filter(cluster=unmanaged).exists()
