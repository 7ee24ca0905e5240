"""Every list the Kubernetes backend makes is paged with `limit` and `continue`, so a cluster
with a huge number of Jobs or Pods is read in bounded requests; an expired continue token
restarts the listing rather than returning part of it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobs.backends.base import BackendUnavailable, JobRef, JobSpec
from jobs.backends.kubernetes import KubernetesBackend
from jobs.backends.kubernetes.objects import MANAGED_SELECTOR
from tests.jobs.kubernetes.conftest import TOKEN, TOKEN_ENV, k8s_options
from tests.k8s_server import FakeKubernetes, decode_continue

JOBS = "/apis/batch/v1/jobs"
PODS = "/api/v1/pods"


@pytest.fixture
def paged(
    k8s: FakeKubernetes, results_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> KubernetesBackend:
    """A backend reading two objects per list request."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, list_page_size=2))


def _submit(backend: KubernetesBackend, project: str = "folding", **fields: Any) -> JobRef:
    spec = JobSpec(
        uuid=uuid.uuid4(),
        name="train",
        project=project,
        cluster_user="alice",
        script=fields.pop("script", "sleep 600"),
        **fields,
    )
    return JobRef(uuid=spec.uuid, backend_id=backend.submit(spec), cluster_user="alice")


def _lists(k8s: FakeKubernetes, path: str) -> list[dict[str, list[str]]]:
    """The query of every GET of `path` the server received, in order."""
    return [query for method, p, query in k8s.requests if (method, p) == ("GET", path)]


def _five_running_jobs(backend: KubernetesBackend, k8s: FakeKubernetes) -> list[JobRef]:
    refs = [_submit(backend, project=f"p{i % 3}") for i in range(5)]
    k8s.advance(5)
    k8s.requests.clear()
    return refs


# --- paging ------------------------------------------------------------------------------------


def test_poll_reads_five_jobs_in_three_pages_of_two_following_the_continue_tokens(paged, k8s):
    refs = _five_running_jobs(paged, k8s)

    statuses = paged.poll(refs)

    assert {bid: s.state for bid, s in statuses.items()} == {r.backend_id: "running" for r in refs}
    pages = _lists(k8s, JOBS)
    assert k8s.calls() == [JOBS, JOBS, JOBS]
    assert [page["limit"] for page in pages] == [["2"], ["2"], ["2"]]
    assert all(page["labelSelector"] == [MANAGED_SELECTOR] for page in pages)
    assert "continue" not in pages[0]
    # Each page continues after the last key the previous one read, from the same snapshot.
    in_key_order = sorted(r.backend_id for r in refs)
    (second_start, second_rv), (third_start, third_rv) = (
        decode_continue(page["continue"][0]) for page in pages[1:]
    )
    assert (second_start, third_start) == (f"{in_key_order[1]}\x00", f"{in_key_order[3]}\x00")
    assert second_rv == third_rv


def test_usage_after_a_paged_poll_reuses_its_listing_of_every_job(paged, k8s):
    refs = _five_running_jobs(paged, k8s)
    k8s.advance(600)
    paged.poll(refs)
    k8s.requests.clear()

    records = paged.usage(refs)

    assert k8s.requests == []
    assert {bid: r.elapsed_seconds for bid, r in records.items()} == {
        r.backend_id: 600 for r in refs
    }


def test_a_fixed_namespace_is_paged_within_it(k8s, results_dir, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    k8s.namespaces["research"] = {"metadata": {"name": "research", "labels": {}}}
    backend = KubernetesBackend(
        name="kube",
        options=k8s_options(k8s, results_dir, namespace="research", list_page_size=2),
    )
    refs = [_submit(backend) for _ in range(3)]
    k8s.requests.clear()

    statuses = backend.poll(refs)

    assert set(statuses) == {r.backend_id for r in refs}
    namespaced = "/apis/batch/v1/namespaces/research/jobs"
    assert k8s.calls() == [namespaced, namespaced]
    assert [page["limit"] for page in _lists(k8s, namespaced)] == [["2"], ["2"]]


def test_the_pods_giving_exit_codes_are_paged_too(paged, k8s):
    failing = [_submit(paged, script="echo oops\nexit 3") for _ in range(3)]
    k8s.advance(60)
    k8s.requests.clear()

    statuses = paged.poll(failing)

    assert [(statuses[r.backend_id].state, statuses[r.backend_id].exit_code) for r in failing] == [
        ("failed", 3)
    ] * 3
    assert k8s.calls() == [JOBS, JOBS, PODS, PODS]
    assert [page["limit"] for page in _lists(k8s, PODS)] == [["2"], ["2"]]
    assert "continue" in _lists(k8s, PODS)[1]


def test_find_pages_through_the_jobs_it_asks_for(paged, k8s):
    refs = [_submit(paged) for _ in range(3)]
    k8s.requests.clear()

    found = paged.find([r.uuid for r in refs])

    assert found == {r.uuid: r.backend_id for r in refs}
    assert k8s.calls() == [JOBS, JOBS]


# --- expired continue tokens -------------------------------------------------------------------


def test_an_expired_continue_token_restarts_the_listing_from_a_fresh_first_page(paged, k8s):
    refs = _five_running_jobs(paged, k8s)
    k8s.expire_continue_tokens(1)

    statuses = paged.poll(refs)

    assert {bid: s.state for bid, s in statuses.items()} == {r.backend_id: "running" for r in refs}
    # page 1, page 2 (410 Expired), then page 1 again without a token, page 2, page 3
    assert ["continue" in page for page in _lists(k8s, JOBS)] == [False, True, False, True, True]


def test_a_restarted_listing_holds_each_job_once_not_the_pages_read_before_the_expiry(paged, k8s):
    refs = _five_running_jobs(paged, k8s)
    k8s.expire_continue_tokens(1)

    items, now = paged._list_jobs(MANAGED_SELECTOR)

    assert sorted(f"{j['metadata']['namespace']}/{j['metadata']['name']}" for j in items) == sorted(
        r.backend_id for r in refs
    )
    assert now == k8s.now


def test_a_continue_token_expiring_again_after_the_restart_is_transient(paged, k8s):
    refs = _five_running_jobs(paged, k8s)
    k8s.expire_continue_tokens(2)

    with pytest.raises(BackendUnavailable, match="continue token expired"):
        paged.poll(refs)

    assert ["continue" in page for page in _lists(k8s, JOBS)] == [False, True, False, True]
    k8s.requests.clear()
    assert len(paged.poll(refs)) == 5  # the next tick reads everything
    assert len(k8s.calls()) == 3


# --- a bad page size ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -2, 2.5, "500", True])
def test_a_bad_page_size_makes_jobs_wait_with_an_error_naming_the_option(
    k8s, results_dir, monkeypatch, size
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    backend = KubernetesBackend(
        name="kube", options=k8s_options(k8s, results_dir, list_page_size=size)
    )
    ref = JobRef(uuid=uuid.uuid4(), backend_id="gpuc-folding/gpuc-x", cluster_user="alice")

    with pytest.raises(BackendUnavailable, match="list_page_size must be a positive whole number"):
        backend.poll([ref])

    assert k8s.requests == []


# --- the local API server pages like Kubernetes ------------------------------------------------


def _raw_list(backend: KubernetesBackend, **params: Any) -> dict[str, Any]:
    from kubernetes import client

    response = client.BatchV1Api(backend._client()).list_job_for_all_namespaces(
        _preload_content=False, **params
    )
    return json.loads(response.data)  # type: ignore[no-any-return]


def test_the_local_server_serves_later_pages_from_the_first_pages_snapshot(backend, k8s):
    refs = sorted((_submit(backend, project=f"p{i}") for i in range(3)), key=lambda r: r.backend_id)

    first = _raw_list(backend, limit=2)
    namespace, name = refs[2].backend_id.split("/")
    del k8s.jobs[(namespace, name)]  # gone now, but it was there when the listing began
    added = _submit(backend, project="p9")  # created after the first page: not in this listing
    rest = _raw_list(backend, limit=2, _continue=first["metadata"]["continue"])

    assert [j["metadata"]["name"] for j in first["items"]] == [
        r.backend_id.split("/")[1] for r in refs[:2]
    ]
    assert first["metadata"]["remainingItemCount"] == 1  # no selector: the count is given
    assert [j["metadata"]["name"] for j in rest["items"]] == [name]
    assert "continue" not in rest["metadata"]
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    now_listed = {j["metadata"]["name"] for j in _raw_list(backend)["items"]}
    assert added.backend_id.split("/")[1] in now_listed
    assert name not in now_listed


def test_the_local_server_answers_410_expired_once_the_snapshot_is_compacted(backend, k8s):
    from kubernetes.client.exceptions import ApiException

    refs = sorted((_submit(backend, project=f"p{i}") for i in range(3)), key=lambda r: r.backend_id)
    first = _raw_list(backend, limit=1)
    k8s.compact()

    with pytest.raises(ApiException) as caught:
        _raw_list(backend, limit=1, _continue=first["metadata"]["continue"])

    status = json.loads(caught.value.body)
    assert (caught.value.status, status["kind"], status["reason"]) == (410, "Status", "Expired")
    assert "too old to display a consistent list" in status["message"]
    # The token in the Status carries on from the latest state, knowingly inconsistent.
    start, version = decode_continue(status["metadata"]["continue"])
    assert (start, version) == (f"{refs[0].backend_id}\x00", -1)
    rest = _raw_list(backend, _continue=status["metadata"]["continue"])
    assert [j["metadata"]["name"] for j in rest["items"]] == [
        r.backend_id.split("/")[1] for r in refs[1:]
    ]


def test_the_local_server_refuses_a_continue_token_it_did_not_make(backend, k8s):
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as caught:
        _raw_list(backend, limit=1, _continue="not-a-token")
    assert caught.value.status == 400
