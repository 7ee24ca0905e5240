"""The Kubernetes backend against the local Kubernetes API server, through the real client."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobs.backends.base import BackendError, BackendUnavailable, JobRef, JobSpec
from jobs.backends.kubernetes import KubernetesBackend
from tests.jobs.kubernetes.conftest import TOKEN, k8s_options
from tests.k8s_server import FakeKubernetes, parse_selector, selector_matches

JOBS = "/apis/batch/v1/jobs"


def _spec(**fields: Any) -> JobSpec:
    data: dict[str, Any] = {
        "uuid": uuid.uuid4(),
        "name": "train",
        "project": "folding",
        "cluster_user": "alice",
        "script": "echo hello\nsleep 30\necho bye\n",
        "gpus": 1,
        "gpu_type": "h100",
        "cpus": 2,
        "memory_mb": 4096,
        "time_limit_minutes": 10,
    }
    data.update(fields)
    return JobSpec(**data)


def _submit(backend: KubernetesBackend, **fields: Any) -> JobRef:
    spec = _spec(**fields)
    return JobRef(uuid=spec.uuid, backend_id=backend.submit(spec), cluster_user="alice")


# --- submit ---------------------------------------------------------------------------------


def test_submit_creates_a_managed_namespace_and_a_labelled_job(backend, k8s):
    ref = _submit(backend)

    assert ref.backend_id == f"gpuc-folding/gpuc-{ref.uuid}"
    namespace = k8s.namespaces["gpuc-folding"]
    assert namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpu-commons"
    job = k8s.jobs[("gpuc-folding", f"gpuc-{ref.uuid}")]
    assert job["metadata"]["labels"]["gpu-commons/job-uuid"] == str(ref.uuid)
    assert job["metadata"]["labels"]["gpu-commons/project"] == "folding"
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert resources["limits"]["nvidia.com/gpu"] == "1"


def test_the_script_travels_in_a_configmap_owned_by_the_job(backend, k8s):
    ref = _submit(backend)
    configmap = k8s.configmaps[("gpuc-folding", f"gpuc-{ref.uuid}-script")]
    job = k8s.jobs[("gpuc-folding", f"gpuc-{ref.uuid}")]
    assert configmap["data"]["job.sh"] == "echo hello\nsleep 30\necho bye\n"
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


def test_a_job_found_after_a_lost_answer_still_runs_its_script(backend, k8s):
    spec = _spec(script="echo found\n")
    k8s.fail_next("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs", 503, after=True)
    with pytest.raises(BackendUnavailable):
        backend.submit(spec)
    ref = JobRef(uuid=spec.uuid, backend_id=backend.find([spec.uuid])[spec.uuid], cluster_user="a")

    k8s.advance(5)

    assert backend.poll([ref])[ref.backend_id].state == "completed"
    assert backend.read_log(ref, "stdout", 0, 100).data == b"found\n"


def test_the_namespace_is_created_once_per_project(backend, k8s):
    _submit(backend)
    _submit(backend)
    _submit(backend, project="other")
    assert len(k8s.calls("POST", "/api/v1/namespaces")) == 2
    assert set(k8s.namespaces) == {"gpuc-folding", "gpuc-other"}


def test_a_gpu_quota_caps_each_project_namespace(k8s, results_dir, monkeypatch):
    monkeypatch.setenv("GPUC_TEST_K8S_TOKEN", TOKEN)
    backend = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir, gpu_quota=4))
    first = _submit(backend, gpus=3)
    second = _submit(backend, gpus=2)

    quota = k8s.quotas[("gpuc-folding", "gpu-commons")]
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4"}
    assert len(k8s.calls("POST", "/api/v1/namespaces/gpuc-folding/resourcequotas")) == 1
    # Quota admission lets the first job's pod in and keeps the second one's out.
    pods = {p["metadata"]["labels"]["gpu-commons/job-uuid"] for p in k8s.pods.values()}
    assert pods == {str(first.uuid)}
    assert "exceeded quota: gpu-commons" in k8s.events[-1][3]
    assert {s.state for s in backend.poll([first, second]).values()} == {"queued"}


def test_resubmitting_the_same_job_meets_409_and_returns_the_existing_job(backend, k8s):
    spec = _spec()
    first = backend.submit(spec)
    again = backend.submit(spec)
    assert again == first
    assert len(k8s.created_jobs) == 1
    assert len(k8s.jobs) == 1


def test_a_foreign_namespace_is_never_used(backend, k8s):
    k8s.namespaces["gpuc-folding"] = {"metadata": {"name": "gpuc-folding", "labels": {}}}
    with pytest.raises(BackendError, match="not managed by GPU Commons"):
        _submit(backend)
    assert k8s.created_jobs == []


def test_an_invalid_job_is_refused_before_anything_is_sent(backend, k8s):
    with pytest.raises(BackendError, match="image"):
        _submit(backend, image="docker.io/evil/miner:latest")
    assert k8s.requests == []


def test_the_api_servers_invalid_answer_is_a_permanent_error_with_its_message(backend, k8s):
    k8s.fail_next("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs", 403)
    with pytest.raises(BackendError, match="injected fault 403"):
        _submit(backend)


def test_a_server_error_or_no_server_is_transient(backend, k8s):
    k8s.fail_next("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs", 500)
    with pytest.raises(BackendUnavailable):
        _submit(backend)
    k8s.stop()
    with pytest.raises(BackendUnavailable):
        backend.poll([JobRef(uuid=uuid.uuid4(), backend_id="gpuc-folding/x", cluster_user="a")])


def test_a_refused_token_is_retried_later_not_blamed_on_the_job(k8s, results_dir, monkeypatch):
    monkeypatch.setenv("GPUC_TEST_K8S_TOKEN", "expired")
    backend = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir))
    with pytest.raises(BackendUnavailable, match="Unauthorized"):
        _submit(backend)
    assert k8s.created_jobs == []


def test_a_token_file_is_reread_when_it_is_rotated(k8s, results_dir, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    options = k8s_options(k8s, results_dir, token_file=str(token_file))
    del options["token_env"]
    backend = KubernetesBackend(name="kube", options=options)
    k8s.token = "old-token"
    assert backend.find([uuid.uuid4()]) == {}
    token_file.write_text("new-token\n")
    os.utime(token_file, (1, 1))  # a different mtime, as a rotation makes
    k8s.token = "new-token"
    assert backend.find([uuid.uuid4()]) == {}


def test_an_empty_token_variable_waits_for_the_operator(k8s, results_dir, monkeypatch):
    monkeypatch.delenv("GPUC_TEST_K8S_TOKEN", raising=False)
    backend = KubernetesBackend(name="kube", options=k8s_options(k8s, results_dir))
    with pytest.raises(BackendUnavailable, match="GPUC_TEST_K8S_TOKEN is empty"):
        backend.find([uuid.uuid4()])


# --- find, poll, usage -------------------------------------------------------------------------


def test_find_asks_once_by_label_for_all_uuids(backend, k8s):
    refs = [_submit(backend) for _ in range(3)]
    unknown = uuid.uuid4()
    k8s.requests.clear()

    found = backend.find([ref.uuid for ref in refs] + [unknown])

    assert found == {ref.uuid: ref.backend_id for ref in refs}
    assert len(k8s.requests) == 1
    method, path, query = k8s.requests[0]
    assert (method, path) == ("GET", JOBS)
    assert "gpu-commons/job-uuid in (" in query["labelSelector"][0]


def test_a_job_moves_from_queued_to_running_to_completed_in_one_list_call_each(backend, k8s):
    ref = _submit(backend)
    k8s.requests.clear()

    assert backend.poll([ref])[ref.backend_id].state == "queued"
    k8s.advance(5)
    running = backend.poll([ref])[ref.backend_id]
    k8s.advance(60)
    done = backend.poll([ref])[ref.backend_id]

    assert running.state == "running"
    assert (done.state, done.exit_code) == ("completed", 0)
    assert (done.ended_at - done.started_at).total_seconds() == 30
    assert k8s.calls() == [JOBS, JOBS, JOBS]


def test_polling_many_jobs_is_still_one_call(backend, k8s):
    refs = [_submit(backend, project=f"p{i % 3}") for i in range(12)]
    k8s.advance(60)
    k8s.requests.clear()

    statuses = backend.poll(refs)

    assert {status.state for status in statuses.values()} == {"completed"}
    assert k8s.calls() == [JOBS]


def test_a_failed_job_carries_its_exit_code_from_one_pods_list(backend, k8s):
    failing = [_submit(backend, script="echo oops\nexit 3") for _ in range(2)]
    fine = _submit(backend)
    k8s.advance(60)
    k8s.requests.clear()

    statuses = backend.poll([*failing, fine])

    assert [(statuses[r.backend_id].state, statuses[r.backend_id].exit_code) for r in failing] == [
        ("failed", 3),
        ("failed", 3),
    ]
    assert statuses[fine.backend_id].state == "completed"
    assert k8s.calls() == [JOBS, "/api/v1/pods"]


def test_a_job_past_its_deadline_times_out(backend, k8s):
    ref = _submit(backend, script="sleep 600", time_limit_minutes=1)
    k8s.advance(700)
    status = backend.poll([ref])[ref.backend_id]
    assert status.state == "timeout"
    assert (status.ended_at - status.started_at).total_seconds() == 60


def test_a_job_that_vanished_reads_as_cancelled_at_the_servers_time(backend, k8s):
    ref = _submit(backend)
    del k8s.jobs[("gpuc-folding", f"gpuc-{ref.uuid}")]
    status = backend.poll([ref])[ref.backend_id]
    assert status.state == "cancelled"
    assert status.ended_at == k8s.now


def test_usage_reuses_the_listing_of_the_poll_just_made(backend, k8s):
    ref = _submit(backend, gpus=2, script="sleep 1800", time_limit_minutes=120)
    k8s.advance(3600)
    backend.poll([ref])
    k8s.requests.clear()

    record = backend.usage([ref])[ref.backend_id]

    assert k8s.requests == []
    assert (record.elapsed_seconds, record.gpus, record.cpus, record.memory_mb) == (
        1800,
        2,
        2,
        4096,
    )
    assert record.gpu_type == "h100"


def test_a_fixed_namespace_serves_a_namespaced_token(k8s, results_dir, monkeypatch):
    monkeypatch.setenv("GPUC_TEST_K8S_TOKEN", TOKEN)
    k8s.namespaces["research"] = {"metadata": {"name": "research", "labels": {}}}
    backend = KubernetesBackend(
        name="kube", options=k8s_options(k8s, results_dir, namespace="research")
    )
    ref = _submit(backend)
    k8s.requests.clear()
    backend.poll([ref])
    assert ref.backend_id.startswith("research/")
    assert k8s.calls() == ["/apis/batch/v1/namespaces/research/jobs"]
    assert "gpuc-folding" not in k8s.namespaces


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_deletes_the_job_in_the_foreground_and_its_script(backend, k8s):
    ref = _submit(backend, script="sleep 3600", time_limit_minutes=120)
    k8s.advance(600)

    backend.cancel(ref)

    assert k8s.deletions == [("gpuc-folding", f"gpuc-{ref.uuid}", "Foreground")]
    assert ("gpuc-folding", f"gpuc-{ref.uuid}-script") not in k8s.configmaps
    status = backend.poll([ref])[ref.backend_id]
    assert status.state == "cancelled"
    assert (status.ended_at - status.started_at).total_seconds() == 600
    assert backend.usage([ref])[ref.backend_id].elapsed_seconds == 600
    k8s.advance(1)
    assert k8s.jobs == {}
    assert backend.poll([ref])[ref.backend_id].state == "cancelled"


def test_cancelling_a_job_that_is_gone_is_not_an_error(backend, k8s):
    ref = _submit(backend)
    backend.cancel(ref)
    k8s.advance(1)
    backend.cancel(ref)


# --- logs --------------------------------------------------------------------------------------


def test_the_log_is_read_by_offset_on_the_portal_side(backend, k8s):
    ref = _submit(backend)
    assert backend.read_log(ref, "stdout", 0, 100).data == b""  # pod not started
    k8s.advance(5)

    live = backend.read_log(ref, "stdout", 0, 100)
    assert (live.data, live.next_offset, live.eof) == (b"hello\n", 6, False)
    k8s.advance(60)
    rest = backend.read_log(ref, "stdout", live.next_offset, 100)
    assert (rest.data, rest.next_offset, rest.eof) == (b"bye\n", 10, True)
    part = backend.read_log(ref, "stdout", 2, 3)
    assert (part.data, part.next_offset, part.eof) == (b"llo", 5, False)
    tail = backend.read_log(ref, "stdout", -4, 100)
    assert (tail.data, tail.next_offset, tail.eof) == (b"bye\n", 10, True)
    past = backend.read_log(ref, "stdout", 50, 100)
    assert (past.data, past.next_offset) == (b"", 10)


def test_stderr_is_merged_into_stdout_by_kubernetes(backend, k8s):
    ref = _submit(backend)
    k8s.advance(60)
    chunk = backend.read_log(ref, "stderr", 0, 100)
    assert (chunk.data, chunk.eof) == (b"", True)


def test_each_array_index_has_its_own_log(backend, k8s):
    ref = _submit(backend, script="echo task $GPUC_ARRAY_TASK_ID\nsleep 10", array="0-2%2")
    k8s.advance(100)
    assert backend.poll([ref])[ref.backend_id].state == "completed"
    assert backend.read_log(ref, "stdout", 0, 100).data == b"task 0\n"
    assert backend.read_log(ref, "stdout.2", 0, 100).data == b"task 2\n"
    record = backend.usage([ref])[ref.backend_id]
    assert (record.elapsed_seconds, record.tasks) == (20, 2)


# --- results -----------------------------------------------------------------------------------


def test_results_are_listed_and_opened_from_the_shared_volume(backend, k8s, results_dir):
    ref = _submit(
        backend, script="mkdir -p plots\necho 0.93 > metrics.txt\necho png > plots/loss.png"
    )
    k8s.advance(5)
    files = backend.list_results(ref)
    assert [(f.path, f.size) for f in files] == [("metrics.txt", 5), ("plots/loss.png", 4)]
    with backend.open_result(ref, "plots/loss.png") as handle:
        assert handle.read() == b"png\n"
    assert (results_dir / str(ref.uuid) / "metrics.txt").read_text() == "0.93\n"


def test_result_paths_cannot_leave_the_jobs_directory(backend, k8s, results_dir: Path):
    ref = _submit(backend, script="echo 1 > ok.txt")
    k8s.advance(5)
    secret = results_dir / "other-job-secret.txt"
    secret.write_text("not yours")
    (results_dir / str(ref.uuid) / "link.txt").symlink_to(secret)

    assert [f.path for f in backend.list_results(ref)] == ["ok.txt"]
    for path in ("../other-job-secret.txt", "/etc/passwd", "link.txt"):
        with pytest.raises(BackendError):
            backend.open_result(ref, path)
    with pytest.raises(FileNotFoundError):
        backend.open_result(ref, "missing.txt")


# --- the local API server itself -------------------------------------------------------------


def test_the_local_servers_label_selectors_match_like_kubernetes():
    labels = {"app": "gpu", "tier": "batch"}
    for selector, expected in [
        ("app=gpu", True),
        ("app==gpu,tier=batch", True),
        ("app!=gpu", False),
        ("app in (cpu, gpu)", True),
        ("tier notin (batch)", False),
        ("app", True),
        ("!missing", True),
        ("missing", False),
    ]:
        assert selector_matches(parse_selector(selector), labels) is expected, selector


def test_the_local_server_refuses_invalid_names_with_a_422_status(backend, k8s):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.BatchV1Api(backend._client())
    k8s.namespaces["ns"] = {"metadata": {"name": "ns"}}
    body = client.V1Job.from_dict(
        {
            "metadata": {"name": "Bad_Name", "labels": {"ok": "not valid!"}},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}
                }
            },
        }
    )
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_job("ns", body)
    assert caught.value.status == 422
    assert "metadata.name" in caught.value.body
    assert isinstance(k8s, FakeKubernetes)
