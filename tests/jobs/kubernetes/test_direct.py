"""Work outside the portal on Kubernetes: batch/v1 Jobs a user creates with kubectl in a
project's namespace are found finished in one listing per tick and measured exactly."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from jobs.backends.base import AccountSpec, JobSpec
from jobs.backends.kubernetes import KubernetesBackend
from jobs.backends.kubernetes.accounts import gpu_type_of, pod_requests
from tests.jobs.kubernetes.conftest import (
    TOKEN,
    TOKEN_ENV,
    create_direct_job,
    direct_job,
    k8s_options,
)

JOBS = "/apis/batch/v1/jobs"
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _accounts(backend: KubernetesBackend, *projects: str) -> list[str]:
    backend.push_accounts([AccountSpec(name=f"gpuc-{p}", project=p) for p in projects])
    return [f"gpuc-{p}" for p in projects]


def _by_name(records: list[Any]) -> dict[str, Any]:
    return {record.name: record for record in records}


def test_a_finished_direct_job_is_found_and_measured_exactly(backend, k8s, kubectl):
    _accounts(backend, "folding")
    since = k8s.now
    created = create_direct_job(
        kubectl,
        "gpuc-folding",
        direct_job(
            "train",
            script="echo start; sleep 120",
            gpus=2,
            cpu="1500m",
            memory="3000Mi",
            node_selector=H100,
            annotations={"gpu-commons/cluster-user": "alice"},
        ),
    )
    k8s.advance(300)
    k8s.requests.clear()

    records, watermark = backend.direct_jobs(["gpuc-folding"], since)

    assert len(records) == 1
    record = records[0]
    uid = created["metadata"]["uid"]
    assert record.backend_id == f"gpuc-folding/{uid}"
    assert (record.account, record.name, record.cluster_user) == ("gpuc-folding", "train", "alice")
    assert (record.state, record.exit_code) == ("completed", 0)
    usage = record.usage
    assert (usage.elapsed_seconds, usage.tasks) == (120, 1)
    assert (usage.gpus, usage.gpu_type, usage.cpus, usage.memory_mb) == (2, "h100", 2, 3000)
    assert usage.started_at == since
    assert usage.ended_at == since + timedelta(seconds=120)
    assert record.submitted_at == since
    assert (record.portal_uuid, record.portal_backend_id) == ("", "")
    # The listing's time (the API server's clock) less the default overlap of 120 s.
    assert watermark == k8s.now - timedelta(seconds=120) == since + timedelta(seconds=180)
    assert k8s.calls() == [JOBS]
    assert "labelSelector" not in k8s.requests[0][2]


def test_running_jobs_and_other_namespaces_are_left_out_and_tagged_jobs_keep_their_tag(
    backend, k8s, kubectl
):
    _accounts(backend, "folding", "other")
    since = k8s.now
    k8s.namespaces["lab-private"] = {"metadata": {"name": "lab-private", "labels": {}}}
    portal_uuid = uuid.uuid4()
    portal_id = backend.submit(
        JobSpec(
            uuid=portal_uuid,
            name="portal",
            project="folding",
            cluster_user="alice",
            script="sleep 10",
        )
    )
    create_direct_job(kubectl, "gpuc-folding", direct_job("done", script="sleep 10"))
    create_direct_job(kubectl, "gpuc-folding", direct_job("still-running", script="sleep 9999"))
    create_direct_job(kubectl, "gpuc-other", direct_job("not-asked", script="sleep 10"))
    create_direct_job(kubectl, "lab-private", direct_job("unmanaged", script="sleep 10"))
    forged = direct_job("forged", script="sleep 10")
    forged["metadata"]["labels"] = {"gpu-commons/job-uuid": str(portal_uuid)}
    create_direct_job(kubectl, "gpuc-folding", forged)
    k8s.advance(60)
    k8s.requests.clear()

    records, _ = backend.direct_jobs(["gpuc-folding"], since)

    # A label anyone can write hides nothing: the portal tells its own jobs from forgeries by
    # the id a portal job with that uuid has.
    assert sorted((r.name, r.portal_uuid, r.portal_backend_id) for r in records) == [
        ("done", "", ""),
        ("forged", str(portal_uuid), "gpuc-folding/forged"),
        (f"gpuc-{portal_uuid}", str(portal_uuid), portal_id),
    ]
    assert k8s.calls() == [JOBS]


def test_failed_and_timed_out_jobs_end_at_their_failure(backend, k8s, kubectl):
    _accounts(backend, "folding")
    since = k8s.now
    create_direct_job(kubectl, "gpuc-folding", direct_job("crash", script="sleep 30; exit 3"))
    create_direct_job(kubectl, "gpuc-folding", direct_job("slow", script="sleep 600", deadline=50))
    k8s.advance(120)

    records, watermark = backend.direct_jobs(["gpuc-folding"], since)

    found = _by_name(records)
    assert (found["crash"].state, found["crash"].exit_code) == ("failed", None)
    assert found["crash"].reason == "Job has reached the specified backoff limit"
    assert (found["crash"].usage.elapsed_seconds, found["crash"].usage.tasks) == (30, 1)
    assert found["slow"].state == "timeout"
    assert found["slow"].reason == "Job was active longer than specified deadline"
    assert (found["slow"].usage.elapsed_seconds, found["slow"].usage.tasks) == (50, 1)
    assert watermark == since  # 120 s listed, 120 s of overlap: it never goes back


def test_parallel_pods_are_counted_as_pods_that_ran_side_by_side(backend, k8s, kubectl):
    _accounts(backend, "folding")
    since = k8s.now
    # Four completions two at a time, 60 s each: two waves over a 120 s span = 240 pod-seconds.
    create_direct_job(
        kubectl,
        "gpuc-folding",
        direct_job("sweep", script="sleep 60", gpus=1, parallelism=2, completions=4),
    )
    # Parallelism 8 but one completion: one pod ran.
    create_direct_job(
        kubectl,
        "gpuc-folding",
        direct_job("single", script="sleep 45", parallelism=8, completions=1),
    )
    k8s.advance(600)

    records, _ = backend.direct_jobs(["gpuc-folding"], since)

    found = _by_name(records)
    sweep = found["sweep"].usage
    assert (sweep.elapsed_seconds, sweep.tasks, sweep.gpus) == (120, 2, 1)
    assert sweep.elapsed_seconds * sweep.tasks == 4 * 60
    single = found["single"].usage
    assert (single.elapsed_seconds, single.tasks) == (45, 1)


def test_each_window_reaches_back_by_the_overlap_and_the_watermark_never_goes_back(
    k8s, results_dir, monkeypatch, kubectl
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    backend = KubernetesBackend(
        name="kube", options=k8s_options(k8s, results_dir, direct_overlap_seconds=30)
    )
    _accounts(backend, "folding")
    start = k8s.now
    create_direct_job(kubectl, "gpuc-folding", direct_job("early", script="sleep 10"))
    k8s.advance(60)
    first, watermark = backend.direct_jobs(["gpuc-folding"], start)
    create_direct_job(kubectl, "gpuc-folding", direct_job("late", script="sleep 20"))
    k8s.advance(60)

    second, later = backend.direct_jobs(["gpuc-folding"], watermark)
    third, same = backend.direct_jobs(["gpuc-folding"], later)

    assert [r.name for r in first] == ["early"]  # ended at +10
    assert watermark == start + timedelta(seconds=30)  # listed at +60, less 30
    assert [r.name for r in second] == ["late"]  # ended at +80
    assert later == start + timedelta(seconds=90)
    assert (third, same) == ([], later)


def test_a_job_made_again_under_the_same_name_is_new_work(backend, k8s, kubectl):
    from kubernetes import client

    _accounts(backend, "folding")
    since = k8s.now
    first = create_direct_job(kubectl, "gpuc-folding", direct_job("train", script="sleep 10"))
    k8s.advance(30)
    client.BatchV1Api(kubectl).delete_namespaced_job("train", "gpuc-folding")
    second = create_direct_job(kubectl, "gpuc-folding", direct_job("train", script="sleep 10"))
    k8s.advance(30)

    records, _ = backend.direct_jobs(["gpuc-folding"], since)

    # The first one is gone from the API (it would have been seen by an earlier tick); the
    # second carries its own uid, so it is never mistaken for the first.
    assert [r.backend_id for r in records] == [f"gpuc-folding/{second['metadata']['uid']}"]
    assert first["metadata"]["uid"] != second["metadata"]["uid"]


def test_the_user_is_the_pods_service_account_when_no_label_names_one(backend, k8s, kubectl):
    _accounts(backend, "folding")
    since = k8s.now
    create_direct_job(
        kubectl, "gpuc-folding", direct_job("a", script="sleep 1", service_account="trainer")
    )
    create_direct_job(kubectl, "gpuc-folding", direct_job("b", script="sleep 1"))
    k8s.advance(10)

    found = _by_name(backend.direct_jobs(["gpuc-folding"], since)[0])

    assert (found["a"].cluster_user, found["b"].cluster_user) == ("trainer", "")


def test_direct_jobs_are_listed_in_pages(k8s, results_dir, monkeypatch, kubectl):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    paged = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, list_page_size=2))
    _accounts(paged, "folding")
    since = k8s.now
    for i in range(5):
        create_direct_job(kubectl, "gpuc-folding", direct_job(f"job-{i}", script="sleep 5"))
    k8s.advance(30)
    k8s.requests.clear()

    records, _ = paged.direct_jobs(["gpuc-folding"], since)

    assert sorted(r.name for r in records) == [f"job-{i}" for i in range(5)]
    assert k8s.calls() == [JOBS, JOBS, JOBS]


def test_no_accounts_means_no_call(backend, k8s):
    since = k8s.now
    assert backend.direct_jobs([], since) == ([], since)
    assert k8s.requests == []


def test_a_job_the_block_kept_from_running_has_nothing_to_charge(backend, k8s, kubectl):
    backend.push_accounts([AccountSpec(name="gpuc-folding", project="folding", blocked=True)])
    since = k8s.now
    create_direct_job(kubectl, "gpuc-folding", direct_job("sneaky", script="sleep 30", deadline=60))
    k8s.advance(120)

    records, _ = backend.direct_jobs(["gpuc-folding"], since)

    # The Job gave up at its deadline without a pod ever running.
    assert k8s.jobs[("gpuc-folding", "sneaky")]["status"]["conditions"][-1]["type"] == "Failed"
    assert k8s.pods == {}
    assert records == []


def test_a_pods_requests_are_counted_as_the_scheduler_counts_them():
    pod = {
        "initContainers": [{"resources": {"requests": {"cpu": "4", "memory": "1Gi"}}}],
        "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "500m", "memory": "2Gi"}}},
            {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
        ],
    }
    assert pod_requests(pod, "nvidia.com/gpu") == (2, 4.0, 2.5 * 2**30)
    assert pod_requests({}, "nvidia.com/gpu") == (0, 0.0, 0.0)


def test_the_gpu_type_is_the_most_specific_node_selector_the_pod_carries():
    selectors = {
        "a100": {"gpu": "a100"},
        "a100-80": {"gpu": "a100", "memory": "80g"},
        "h100": {"gpu": "h100"},
    }
    assert gpu_type_of({"nodeSelector": {"gpu": "a100", "memory": "80g"}}, selectors) == "a100-80"
    assert gpu_type_of({"nodeSelector": {"gpu": "a100", "zone": "x"}}, selectors) == "a100"
    assert gpu_type_of({"nodeSelector": {"zone": "x"}}, selectors) == ""
    assert gpu_type_of({}, selectors) == ""


def test_the_local_server_selects_jobs_without_a_label_with_the_bang_selector():
    from tests.k8s_server import parse_selector, selector_matches

    requirement = parse_selector("!gpu-commons/job-uuid")
    assert requirement == [("gpu-commons/job-uuid", "!", set())]
    assert selector_matches(requirement, {"job-name": "x"})
    assert not selector_matches(requirement, {"gpu-commons/job-uuid": "u"})
