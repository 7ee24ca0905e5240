"""Project accounts on Kubernetes: each project's namespace carries one ResourceQuota that
holds its concurrent GPU cap and, while it may start nothing, `pods: 0`. One listing per tick,
a write only where the quota differs, refusals reported per namespace."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from jobs.backends.base import AccountSpec, AccountState, BackendError, JobSpec
from jobs.backends.kubernetes import KubernetesBackend, project_namespace
from tests.jobs.kubernetes.conftest import (
    TOKEN,
    TOKEN_ENV,
    create_direct_job,
    direct_job,
    k8s_options,
)
from tests.k8s_server import FakeKubernetes

QUOTAS = "/api/v1/resourcequotas"
GPU = "requests.nvidia.com/gpu"


def _account(project: str, **fields: Any) -> AccountSpec:
    return AccountSpec(name=f"gpuc-{project}", project=project, **fields)


def _writes(k8s: FakeKubernetes) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in k8s.requests if method != "GET"]


def _hard(k8s: FakeKubernetes, namespace: str) -> dict[str, str]:
    return dict(k8s.quotas[(namespace, "gpu-commons")]["spec"]["hard"])


def test_the_account_name_is_the_namespace_the_projects_jobs_run_in(backend):
    assert backend.account_name("vision-lab.folding") == "gpuc-vision-lab-folding-07452c5c"
    assert project_namespace({"namespace_prefix": "gpuc-"}, "folding") == "gpuc-folding"
    assert project_namespace({"namespace": "shared"}, "folding") == "shared"
    assert backend.manages_accounts is True


def test_push_accounts_makes_the_namespace_and_a_quota_carrying_the_gpu_cap(backend, k8s):
    refusals = backend.push_accounts([_account("folding", gpu_cap=4, limit_su=Decimal(1000))])

    assert refusals == {}
    labels = k8s.namespaces["gpuc-folding"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "gpu-commons"
    assert labels["gpu-commons/project"] == "folding"
    quota = k8s.quotas[("gpuc-folding", "gpu-commons")]
    assert quota["spec"]["hard"] == {GPU: "4"}
    assert quota["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "gpu-commons"}
    # One listing, then for a new account: is the namespace there (someone else's?), make it,
    # make its quota.
    assert [(method, path) for method, path, _ in k8s.requests] == [
        ("GET", QUOTAS),
        ("GET", "/api/v1/namespaces/gpuc-folding"),
        ("POST", "/api/v1/namespaces"),
        ("POST", "/api/v1/namespaces/gpuc-folding/resourcequotas"),
    ]


def test_the_cap_holds_gpus_in_use_at_once_across_portal_and_direct_jobs(backend, k8s, kubectl):
    backend.push_accounts([_account("folding", gpu_cap=2)])
    create_direct_job(kubectl, "gpuc-folding", direct_job("first", gpus=1, script="sleep 600"))
    create_direct_job(kubectl, "gpuc-folding", direct_job("second", gpus=1, script="sleep 600"))
    create_direct_job(kubectl, "gpuc-folding", direct_job("third", gpus=1, script="sleep 60"))
    k8s.advance(10)

    running = sorted(p["metadata"]["labels"]["job-name"] for p in k8s.pods.values())
    assert running == ["first", "second"]
    assert k8s.events[-1][1:3] == ("job/third", "FailedCreate")
    assert "exceeded quota: gpu-commons" in k8s.events[-1][3]
    assert backend.read_accounts(["gpuc-folding"])["gpuc-folding"].limits == {GPU: "2"}
    assert k8s.quotas[("gpuc-folding", "gpu-commons")]["status"]["used"] == {GPU: "2"}


def test_changing_the_cap_of_one_project_is_exactly_one_write(backend, k8s):
    backend.push_accounts([_account("a", gpu_cap=4), _account("b", gpu_cap=4)])
    k8s.requests.clear()

    refusals = backend.push_accounts([_account("a", gpu_cap=6), _account("b", gpu_cap=4)])

    assert refusals == {}
    assert _writes(k8s) == [("PUT", "/api/v1/namespaces/gpuc-a/resourcequotas/gpu-commons")]
    assert k8s.calls("GET") == [QUOTAS]
    assert (_hard(k8s, "gpuc-a"), _hard(k8s, "gpuc-b")) == ({GPU: "6"}, {GPU: "4"})


def test_an_unchanged_tick_reads_once_and_writes_nothing(backend, k8s):
    accounts = [_account(p, gpu_cap=2, limit_su=Decimal(10)) for p in ("a", "b", "c")]
    accounts.append(_account("d", limit_su=Decimal(0), blocked=True))
    backend.push_accounts(accounts)
    k8s.requests.clear()

    assert backend.push_accounts(accounts) == {}
    assert backend.push_accounts(accounts) == {}

    assert _writes(k8s) == []
    assert k8s.calls() == [QUOTAS, QUOTAS]


def test_a_quota_the_api_server_rewrote_in_canonical_form_is_not_written_again(backend, k8s):
    backend.push_accounts([_account("folding", gpu_cap=2)])
    k8s.quotas[("gpuc-folding", "gpu-commons")]["spec"]["hard"][GPU] = "2000m"
    k8s.requests.clear()

    backend.push_accounts([_account("folding", gpu_cap=2)])

    assert _writes(k8s) == []


def test_an_exhausted_account_starts_no_new_pod_and_credit_lets_it_start(backend, k8s, kubectl):
    backend.push_accounts([_account("folding", gpu_cap=4, limit_su=Decimal(50))])
    create_direct_job(kubectl, "gpuc-folding", direct_job("before", script="sleep 600"))
    k8s.advance(5)
    k8s.requests.clear()

    backend.push_accounts([_account("folding", gpu_cap=4, limit_su=Decimal(50), blocked=True)])
    create_direct_job(kubectl, "gpuc-folding", direct_job("after", script="sleep 60"))
    k8s.advance(5)

    assert _hard(k8s, "gpuc-folding") == {GPU: "4", "pods": "0"}
    assert _writes(k8s)[0] == ("PUT", "/api/v1/namespaces/gpuc-folding/resourcequotas/gpu-commons")
    phases = {p["metadata"]["labels"]["job-name"]: p["status"]["phase"] for p in k8s.pods.values()}
    assert phases == {"before": "Running"}  # a quota never evicts; nothing new starts
    assert "exceeded quota: gpu-commons, requested: pods=1" in k8s.events[-1][3]

    backend.push_accounts([_account("folding", gpu_cap=4, limit_su=Decimal(80))])
    k8s.advance(5)

    assert _hard(k8s, "gpuc-folding") == {GPU: "4"}
    phases = {p["metadata"]["labels"]["job-name"]: p["status"]["phase"] for p in k8s.pods.values()}
    assert phases == {"before": "Running", "after": "Running"}


def test_a_closed_account_is_blocked_and_kept(backend, k8s):
    backend.push_accounts([_account("folding")])
    backend.push_accounts([_account("folding", closed=True)])

    assert _hard(k8s, "gpuc-folding") == {"pods": "0"}
    assert "gpuc-folding" in k8s.namespaces
    assert [m for m, _, _ in k8s.requests if m == "DELETE"] == []


def test_no_cap_and_no_block_is_an_empty_quota_and_the_clusters_default_cap_fills_in(
    k8s, results_dir, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    plain = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir))
    capped = KubernetesBackend(name="kube2", options=k8s_options(k8s, results_dir, gpu_quota=8))

    plain.push_accounts([_account("a")])
    capped.push_accounts([_account("b"), _account("c", gpu_cap=3)])

    assert (_hard(k8s, "gpuc-a"), _hard(k8s, "gpuc-b"), _hard(k8s, "gpuc-c")) == (
        {},
        {GPU: "8"},
        {GPU: "3"},
    )


def test_a_refusal_in_one_namespace_is_reported_and_the_others_are_applied(backend, k8s):
    backend.push_accounts([_account(p, gpu_cap=1) for p in ("a", "b", "c")])
    message = (
        'resourcequotas "gpu-commons" is forbidden: User "system:serviceaccount:gpuc:portal" '
        'cannot update resource "resourcequotas" in API group "" in the namespace "gpuc-b"'
    )
    k8s.fail_next("PUT", r"/api/v1/namespaces/gpuc-b/resourcequotas/.*", 403, message=message)

    refusals = backend.push_accounts([_account(p, gpu_cap=2) for p in ("a", "b", "c")])

    assert refusals == {
        "gpuc-b": f"Kubernetes refused to set the ResourceQuota of namespace gpuc-b: {message}"
    }
    assert [_hard(k8s, ns) for ns in ("gpuc-a", "gpuc-b", "gpuc-c")] == [
        {GPU: "2"},
        {GPU: "1"},
        {GPU: "2"},
    ]
    k8s.requests.clear()

    assert backend.push_accounts([_account(p, gpu_cap=2) for p in ("a", "b", "c")]) == {}
    assert _writes(k8s) == [("PUT", "/api/v1/namespaces/gpuc-b/resourcequotas/gpu-commons")]


def test_a_namespace_someone_else_owns_is_refused_and_left_alone(backend, k8s):
    k8s.namespaces["gpuc-taken"] = {"metadata": {"name": "gpuc-taken", "labels": {}}}

    refusals = backend.push_accounts([_account("taken", gpu_cap=1), _account("ours", gpu_cap=1)])

    assert refusals == {
        "gpuc-taken": "Namespace gpuc-taken exists and is not managed by GPU Commons."
    }
    assert ("gpuc-taken", "gpu-commons") not in k8s.quotas
    assert _hard(k8s, "gpuc-ours") == {GPU: "1"}


def test_an_account_name_that_is_not_the_projects_namespace_is_refused(backend, k8s):
    refusals = backend.push_accounts([AccountSpec(name="gpuc-elsewhere", project="folding")])

    assert refusals == {
        "gpuc-elsewhere": "gpuc-elsewhere is not the namespace of project folding on cluster "
        "kube (gpuc-folding)."
    }
    assert _writes(k8s) == []


def test_an_invalid_quota_is_refused_with_the_api_servers_422_message(
    k8s, results_dir, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    # An extended resource without a domain cannot be limited ("requests.gpu" is no resource
    # for quota): the API server says so and the push reports it.
    odd = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, gpu_resource="gpu"))

    refusals = odd.push_accounts([_account("folding", gpu_cap=1)])

    assert refusals == {
        "gpuc-folding": "Kubernetes refused to set the ResourceQuota of namespace gpuc-folding: "
        'ResourceQuota "gpu-commons" is invalid: spec.hard[requests.gpu]: Invalid value: '
        '"requests.gpu": must be a standard resource for quota'
    }
    assert ("gpuc-folding", "gpu-commons") not in k8s.quotas


def test_a_namespace_deleted_behind_the_portals_back_is_made_again(backend, k8s):
    backend.push_accounts([_account("folding", gpu_cap=1)])
    del k8s.namespaces["gpuc-folding"]
    del k8s.quotas[("gpuc-folding", "gpu-commons")]

    assert backend.push_accounts([_account("folding", gpu_cap=1)]) == {}

    assert "gpuc-folding" in k8s.namespaces
    assert _hard(k8s, "gpuc-folding") == {GPU: "1"}


def test_read_accounts_reads_every_quota_in_one_listing(backend, k8s):
    backend.push_accounts([_account("a", gpu_cap=2), _account("b", blocked=True), _account("c")])
    k8s.requests.clear()

    states = backend.read_accounts(["gpuc-a", "gpuc-b", "gpuc-missing"])

    assert states == {
        "gpuc-a": AccountState(name="gpuc-a", users=(), limits={GPU: "2"}),
        "gpuc-b": AccountState(name="gpuc-b", users=(), limits={"pods": "0"}),
    }
    assert k8s.calls() == [QUOTAS]
    assert backend.account_limits(_account("b", blocked=True)) == {"pods": "0"}


def test_quotas_are_read_in_pages(k8s, results_dir, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    paged = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, list_page_size=2))
    accounts = [_account(f"p{i}", gpu_cap=1) for i in range(5)]
    paged.push_accounts(accounts)
    k8s.requests.clear()

    assert paged.push_accounts(accounts) == {}

    assert k8s.calls() == [QUOTAS, QUOTAS, QUOTAS]
    assert [q["limit"] for m, p, q in k8s.requests] == [["2"], ["2"], ["2"]]


def test_a_cluster_with_one_fixed_namespace_has_no_project_accounts(k8s, results_dir, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    shared = KubernetesBackend(
        name="kube", options=k8s_options(k8s, results_dir, namespace="shared")
    )

    assert shared.manages_accounts is False
    with pytest.raises(BackendError, match="no project accounts"):
        shared.push_accounts([AccountSpec(name="shared", project="folding")])
    assert k8s.requests == []


def test_submit_creates_the_default_quota_but_never_overwrites_a_pushed_one(
    k8s, results_dir: Path, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    backend = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, gpu_quota=8))
    backend.push_accounts([_account("folding", gpu_cap=2)])
    fresh = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, gpu_quota=8))
    k8s.requests.clear()

    fresh.submit(
        JobSpec(uuid=uuid.uuid4(), name="train", project="folding", cluster_user="alice", gpus=1)
    )

    assert _hard(k8s, "gpuc-folding") == {GPU: "2"}
    assert k8s.calls("PUT") == []


def test_two_ticks_pushing_at_once_make_each_namespace_and_quota_once(
    k8s, results_dir, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    workers = [
        KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir)) for _ in range(2)
    ]
    accounts = [
        _account(f"p{i}", gpu_cap=i + 1, limit_su=Decimal(i), blocked=i == 0) for i in range(6)
    ]
    start = threading.Barrier(2)
    answers: list[dict[str, str]] = []

    def tick(worker: KubernetesBackend) -> None:
        start.wait()
        answers.append(worker.push_accounts(accounts))

    threads = [threading.Thread(target=tick, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [{}, {}]
    assert sorted(k8s.namespaces) == [f"gpuc-p{i}" for i in range(6)]
    assert [_hard(k8s, f"gpuc-p{i}") for i in range(6)] == [
        {GPU: "1", "pods": "0"},
        *({GPU: str(i + 1)} for i in range(1, 6)),
    ]
