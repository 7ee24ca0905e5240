"""A Kubernetes cluster's options are checked at startup, and each job against them before
anything is held or sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobs.backends.base import JobSpec
from jobs.backends.kubernetes import KubernetesBackend

GOOD: dict[str, Any] = {
    "host": "https://k8s.example.org:6443",
    "ca_file": "/etc/gpuc/k8s-ca.pem",
    "token_env": "K8S_TOKEN",
    "allowed_images": ["nvcr.io/nvidia/pytorch:*", "busybox:*"],
    "default_image": "busybox:1.36",
    "gpu_types": ["h100", "a100"],
    "node_selectors": {"h100": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
    "queue_name": "research",
    "priority_class": "gpu-normal",
    "results_pvc": "gpuc-results",
    "results_mount_path": "/results",
    "results_host_path": "/srv/gpuc/results",
    "gpu_quota": 16,
    "max_gpus": 8,
}


def _problems(**changes: Any) -> list[str]:
    options = {**GOOD, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        del options[key]
    return KubernetesBackend.check_options(options)


def test_a_complete_configuration_has_no_problems():
    assert _problems() == []


def test_a_kubeconfig_or_in_cluster_configuration_needs_no_host():
    assert _problems(host=None, token_env=None, kubeconfig="/etc/gpuc/kubeconfig") == []
    assert _problems(host=None, token_env=None, in_cluster=True) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"token": "eyJhbGciOi"}, "Never store a token"),
        ({"token_env": None}, "exactly one way to authenticate"),
        ({"token_file": "/run/token"}, "exactly one way to authenticate"),
        ({"host": "k8s.example.org"}, "host must be the API server URL"),
        ({"token_env": "not a name"}, "token_env must be the name"),
        ({"namespace_prefix": "GPU_"}, "namespace_prefix"),
        ({"namespace": "Bad_NS"}, "namespace must be a DNS-1123 label"),
        ({"allowed_images": "busybox"}, "allowed_images must be a list"),
        ({"allowed_images": None, "default_image": None}, "no image could run"),
        ({"default_image": "evil/miner:latest"}, "default_image evil/miner:latest is not in"),
        ({"gpu_resource": "nvidia gpu"}, "gpu_resource"),
        ({"node_selectors": {"h100": {"bad key!": "x"}}}, "node_selectors must map"),
        ({"node_selectors": {"v100": {"gpu": "v100"}}}, "not in gpu_types"),
        ({"queue_name": "not a label!"}, "queue_name"),
        ({"priority_class": "Not_Valid"}, "priority_class"),
        ({"max_gpus": 0}, "max_gpus must be a positive whole number"),
        ({"gpu_quota": -1}, "gpu_quota must be a whole number"),
        ({"direct_overlap_seconds": -5}, "direct_overlap_seconds must be a whole number"),
        ({"direct_overlap_seconds": "120"}, "direct_overlap_seconds must be a whole number"),
        ({"run_as_user": 0}, "never root"),
        ({"results_host_path": None}, "Results need"),
        ({"results_mount_path": "results"}, "results_mount_path must be an absolute path"),
        ({"results_nfs": {"server": "nfs"}}, "results_pvc or results_nfs, not both"),
        ({"ca_file": "relative.pem"}, "ca_file must be an absolute path"),
        ({"verify_ssl": "no"}, "verify_ssl must be true or false"),
    ],
)
def test_each_bad_option_is_named_in_a_sentence(changes, words):
    problems = _problems(**changes)
    assert any(words in problem for problem in problems), problems
    assert all(problem.endswith(".") for problem in problems)


@pytest.mark.parametrize("size", [0, -1, 2.5, "500", True])
def test_a_list_page_size_that_is_not_a_positive_whole_number_is_refused(size):
    assert _problems(list_page_size=size) == ["list_page_size must be a positive whole number."]


def test_a_positive_list_page_size_is_accepted():
    assert _problems(list_page_size=1) == []
    assert _problems(list_page_size=5000) == []


def _spec(**fields: Any) -> JobSpec:
    data: dict[str, Any] = {
        "uuid": uuid.uuid4(),
        "name": "train",
        "project": "folding",
        "cluster_user": "alice",
        "script": "echo hi",
        "gpus": 1,
        "gpu_type": "h100",
    }
    data.update(fields)
    return JobSpec(**data)


@pytest.fixture
def kube() -> KubernetesBackend:
    return KubernetesBackend(name="kube", options=GOOD)


def test_a_good_job_passes(kube):
    assert kube.validate_spec(_spec()) == []
    assert kube.validate_spec(_spec(image="nvcr.io/nvidia/pytorch:24.01-py3")) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"image": "docker.io/evil/miner:latest"}, "image"),
        ({"image": "nvcr.io/nvidia/pytorch"}, "image"),  # the pattern wants a tag
        ({"command": "python train.py"}, "command"),
        ({"command": ["python", 3]}, "command"),
        ({"command": ["python"], "script": "echo hi"}, "command"),
        ({"gpus": 9}, "gpus"),
        ({"gpu_type": "v100"}, "gpu_type"),
        ({"name": "my training run"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": "trailing-"}, "name"),
        ({"array": "1-10"}, "array"),
        ({"env": {"BAD-NAME": "1"}}, "env"),
    ],
)
def test_a_job_the_cluster_would_refuse_names_the_field(kube, fields, field):
    errors = kube.validate_spec(_spec(**fields))
    assert [f for f, _ in errors] == [field], errors


def test_the_system_check_reports_a_kubernetes_cluster_with_bad_options(db):
    from portal.checks import check_cluster_backends
    from quotas.models import Cluster
    from tests import factories

    factories.ClusterFactory(
        name="kube-bad", kind=Cluster.Kind.KUBERNETES, options={**GOOD, "token": "eyJhbGciOi"}
    )
    factories.ClusterFactory(name="kube-good", kind=Cluster.Kind.KUBERNETES, options=GOOD)

    messages = [m.msg for m in check_cluster_backends()]

    assert any("kube-bad" in m and "Never store a token" in m for m in messages), messages
    assert not any("kube-good" in m for m in messages)
