"""The local Kubernetes API server, a backend pointed at it, and a priced Kubernetes cluster
with an allocation for alice's project."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from jobs.backends import get_backend
from jobs.backends.kubernetes import KubernetesBackend
from jobs.models import ClusterAccount
from quotas.models import Allocation, Cluster, Rate
from quotas.services import ledger_credit
from tests import factories
from tests.conftest import Tenant
from tests.k8s_server import FakeKubernetes

TOKEN = "k8s-test-token"
TOKEN_ENV = "GPUC_TEST_K8S_TOKEN"


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """The results volume as the portal host sees it (the fake kubelet writes here too)."""
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture
def k8s(results_dir: Path) -> Iterator[FakeKubernetes]:
    server = FakeKubernetes(token=TOKEN, volumes={"gpuc-results": results_dir}).start()
    yield server
    server.stop()


def k8s_options(server: FakeKubernetes, results_dir: Path, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": server.url,
        "token_env": TOKEN_ENV,
        "namespace_prefix": "gpuc-",
        "allowed_images": ["busybox:*", "ghcr.io/vision-lab/*"],
        "default_image": "busybox:1.36",
        "gpu_types": ["h100", "a100"],
        "node_selectors": {"h100": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "results_pvc": "gpuc-results",
        "results_mount_path": "/results",
        "results_host_path": str(results_dir),
        "max_gpus": 8,
        "max_cpus": 64,
        "max_memory_mb": 262144,
        "max_time_minutes": 2880,
        "connect_timeout": 2,
        "read_timeout": 5,
    }
    options.update(extra)
    return options


@pytest.fixture
def backend(
    k8s: FakeKubernetes, results_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> KubernetesBackend:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir))


@pytest.fixture
def k8s_cluster(
    db: None, k8s: FakeKubernetes, results_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Cluster:
    """A Kubernetes cluster priced like the simulated one: 2 SU/h100-hour, 1 SU/GPU-hour
    otherwise, 0.1 SU/CPU-hour, 0.01 SU/GB-hour."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    cluster = factories.ClusterFactory(
        name="kube", kind=Cluster.Kind.KUBERNETES, options=k8s_options(k8s, results_dir)
    )
    for resource, gpu_type, rate in (
        (Rate.Resource.GPU_HOUR, "h100", "2"),
        (Rate.Resource.GPU_HOUR, "", "1"),
        (Rate.Resource.CPU_HOUR, "", "0.1"),
        (Rate.Resource.MEM_GB_HOUR, "", "0.01"),
    ):
        factories.RateFactory(
            cluster=cluster, resource=resource, gpu_type=gpu_type, su_per_unit=Decimal(rate)
        )
    return cluster


@pytest.fixture
def k8s_allocation(tenant: Tenant, k8s_cluster: Cluster, alice: User, bob: User) -> Allocation:
    """1000 SU for alice's project on the Kubernetes cluster, and cluster accounts."""
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[k8s_cluster])
    ledger_credit(
        actor=None, allocation=allocation, amount=Decimal(1000), key=f"k8s-{allocation.pk}"
    )
    ClusterAccount.objects.create(user=alice, cluster=k8s_cluster, username="alice", uid=1001)
    ClusterAccount.objects.create(user=bob, cluster=k8s_cluster, username="bob", uid=1002)
    allocation.refresh_from_db()
    return allocation


@pytest.fixture
def kube_backend(k8s_cluster: Cluster) -> KubernetesBackend:
    """The very backend instance the portal services use for the cluster."""
    instance = get_backend(k8s_cluster)
    assert isinstance(instance, KubernetesBackend)
    return instance


@pytest.fixture
def kubectl(k8s: FakeKubernetes) -> Iterator[Any]:
    """The real `kubernetes` client as a user outside the portal holds it (kubectl's role):
    an ApiClient for the local API server with the test token."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = k8s.url
    configuration.api_key = {"authorization": TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    api_client = client.ApiClient(configuration)
    yield api_client
    api_client.close()


def direct_job(
    name: str,
    *,
    script: str = "sleep 60",
    gpus: int = 0,
    cpu: str = "1",
    memory: str = "1Gi",
    parallelism: int | None = None,
    completions: int | None = None,
    deadline: int | None = None,
    node_selector: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job as a user writes it for kubectl: none of the portal's labels."""
    amounts = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "work",
                "image": "busybox:1.36",
                "command": ["/bin/sh", "-c", script],
                "resources": {"requests": dict(amounts), "limits": dict(amounts)},
            }
        ],
    }
    if node_selector:
        pod["nodeSelector"] = node_selector
    if service_account:
        pod["serviceAccountName"] = service_account
    spec: dict[str, Any] = {"backoffLimit": 0, "template": {"spec": pod}}
    for key, value in (
        ("parallelism", parallelism),
        ("completions", completions),
        ("activeDeadlineSeconds", deadline),
    ):
        if value is not None:
            spec[key] = value
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


def create_direct_job(kubectl: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the Job through the client; the API server's answer as a dict."""
    import json

    from kubernetes import client

    response = client.BatchV1Api(kubectl).create_namespaced_job(
        namespace, body, _preload_content=False
    )
    return json.loads(response.data)  # type: ignore[no-any-return]
