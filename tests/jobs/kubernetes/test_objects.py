"""The pure parts of the Kubernetes backend: names, the Job manifest, and reading Jobs and Pods
(in the API's own shapes) back into portal states and usage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from jobs.backends.base import BackendError, JobSpec
from jobs.backends.kubernetes.objects import (
    build_job_manifest,
    dns_label,
    is_label_value,
    job_name,
    label_value,
    namespace_for,
    parse_array,
    parse_quantity,
    parse_stream,
    pod_exit_info,
    service_host,
    status_from_job,
    usage_from_job,
)

UUID = uuid.UUID("0b7c1e9e-3f43-4d0c-9a51-2f7f8f4d9a10")
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
OPTIONS: dict[str, Any] = {
    "default_image": "busybox:1.36",
    "node_selectors": {"h100": {"nvidia.com/gpu.product": "H100"}},
    "results_pvc": "gpuc-results",
    "results_mount_path": "/results",
    "results_host_path": "/srv/results",
}


def _spec(**fields: Any) -> JobSpec:
    data: dict[str, Any] = {
        "uuid": UUID,
        "name": "train",
        "project": "folding",
        "cluster_user": "alice",
        "script": "echo hi\n",
        "gpus": 2,
        "gpu_type": "h100",
        "cpus": 4,
        "memory_mb": 8192,
        "time_limit_minutes": 90,
    }
    data.update(fields)
    return JobSpec(**data)


def _job(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """A batch/v1 Job as the API server returns it, with the status given."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(UUID),
            "namespace": "gpuc-folding",
            "uid": "5e0d8a3b-aaaa-bbbb-cccc-000000000001",
            "labels": {"app.kubernetes.io/managed-by": "gpu-commons"},
            "annotations": {"gpu-commons/gpu-type": "h100"},
            **meta,
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "resources": {
                                "requests": {
                                    "cpu": "4",
                                    "memory": "8192Mi",
                                    "nvidia.com/gpu": "2",
                                },
                            },
                        }
                    ]
                }
            },
        },
        "status": status,
    }


def _condition(kind: str, reason: str, at: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": at,
        "lastTransitionTime": at,
    }


def _pod(name: str, job: str, *, exit_code: int | None, phase: str, **status: Any) -> dict:
    state = (
        {"terminated": {"exitCode": exit_code, "reason": "Error", "finishedAt": "x"}}
        if exit_code is not None
        else {"running": {"startedAt": "2025-03-01T11:00:00Z"}}
    )
    return {
        "metadata": {"name": name, "namespace": "gpuc-folding", "labels": {"job-name": job}},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "main", "state": state}],
            **status,
        },
    }


# --- names ---------------------------------------------------------------------------------


def test_the_job_name_is_derived_from_the_portal_uuid():
    assert job_name(UUID) == "gpuc-0b7c1e9e-3f43-4d0c-9a51-2f7f8f4d9a10"


def test_a_clean_slug_keeps_its_namespace_name():
    assert namespace_for("gpuc-", "folding") == "gpuc-folding"


def test_an_unsafe_or_long_project_name_becomes_a_unique_dns_label():
    odd = namespace_for("gpuc-", "Vision_Lab/Protein Folding")
    long = namespace_for("gpuc-", "x" * 100)
    assert odd.startswith("gpuc-vision-lab-protein-folding-")
    assert len(long) <= 63 and long.startswith("gpuc-xxx")
    for name in (odd, long):
        assert dns_label(name) == name
    assert namespace_for("gpuc-", "Folding") != namespace_for("gpuc-", "folding")


def test_label_values_are_kept_when_valid_and_made_safe_otherwise():
    assert label_value("train-1.v2") == "train-1.v2"
    assert is_label_value(label_value("my run!"))
    assert is_label_value(label_value("a" * 80))
    assert not is_label_value("ends-with-dash-")


@pytest.mark.parametrize(
    ("array", "expected"),
    [("", None), ("0-9", (10, 10)), ("0-9%2", (10, 2)), ("0", (1, 1)), ("0-3%8", (4, 4))],
)
def test_array_specs_become_completions_and_parallelism(array, expected):
    assert parse_array(array) == expected


@pytest.mark.parametrize("array", ["1-5", "0,2,4", "0-9:2", "0-9%0", "x"])
def test_arrays_kubernetes_cannot_index_are_refused(array):
    with pytest.raises(ValueError, match=r"array|parallelism"):
        parse_array(array)


def test_log_streams_may_name_an_array_index():
    assert parse_stream("stdout") == ("stdout", None)
    assert parse_stream("stdout.3") == ("stdout", 3)
    assert parse_stream("stderr") == ("stderr", None)
    with pytest.raises(BackendError):
        parse_stream("../etc")


def test_quantities_are_read_in_base_units():
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("8Gi") == 8 * 2**30
    assert parse_quantity("8192Mi") == 8192 * 2**20
    assert parse_quantity("2") == 2
    with pytest.raises(ValueError):
        parse_quantity("lots")


# --- the manifest ----------------------------------------------------------------------------


def test_the_job_requests_and_limits_cpu_memory_and_gpus_with_a_deadline_and_no_retries():
    manifest = build_job_manifest(_spec(), OPTIONS, "gpuc-folding")
    spec = manifest["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    amounts = {"cpu": "4", "memory": "8192Mi", "nvidia.com/gpu": "2"}
    assert manifest["metadata"]["name"] == job_name(UUID)
    assert manifest["metadata"]["namespace"] == "gpuc-folding"
    assert manifest["metadata"]["labels"]["gpu-commons/job-uuid"] == str(UUID)
    assert manifest["metadata"]["labels"]["gpu-commons/project"] == "folding"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpu-commons"
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    assert spec["activeDeadlineSeconds"] == 90 * 60
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] > 0
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 1000
    assert "completionMode" not in spec


def test_a_script_runs_from_its_configmap_with_the_shell():
    manifest = build_job_manifest(_spec(), OPTIONS, "gpuc-folding")
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["/bin/sh", "/gpuc/script/job.sh"]
    assert {"name": "script", "mountPath": "/gpuc/script", "readOnly": True} in container[
        "volumeMounts"
    ]
    script_volume = next(v for v in pod["volumes"] if v["name"] == "script")
    assert script_volume["configMap"]["name"] == f"gpuc-{UUID}-script"


def test_a_command_is_passed_as_an_argument_list_with_the_image():
    manifest = build_job_manifest(
        _spec(script="", image="busybox:1.36", command=("python", "train.py", "--lr=0.1")),
        OPTIONS,
        "gpuc-folding",
    )
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "train.py", "--lr=0.1"]
    assert container["image"] == "busybox:1.36"


def test_results_go_to_the_jobs_own_subpath_of_the_shared_volume():
    manifest = build_job_manifest(_spec(), OPTIONS, "gpuc-folding")
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "results", "mountPath": "/results", "subPath": str(UUID)} in container[
        "volumeMounts"
    ]
    assert container["workingDir"] == "/results"
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "gpuc-results"}} in pod[
        "volumes"
    ]


def test_an_array_is_an_indexed_job():
    manifest = build_job_manifest(_spec(array="0-9%2"), OPTIONS, "gpuc-folding")
    spec = manifest["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == (
        "Indexed",
        10,
        2,
    )


def test_queue_and_priority_class_are_set_when_configured():
    options = {**OPTIONS, "queue_name": "research", "priority_class": "gpu-low"}
    manifest = build_job_manifest(_spec(), options, "gpuc-folding")
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert manifest["spec"]["template"]["spec"]["priorityClassName"] == "gpu-low"


def test_a_cpu_job_asks_for_no_gpu_and_portal_variables_cannot_be_overridden():
    manifest = build_job_manifest(
        _spec(gpus=0, gpu_type="", env={"GPUC_JOB_UUID": "forged", "SEED": "7"}),
        OPTIONS,
        "gpuc-folding",
    )
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["GPUC_JOB_UUID"] == str(UUID)
    assert env["SEED"] == "7"
    assert "nodeSelector" not in manifest["spec"]["template"]["spec"]


def test_only_the_portals_session_port_makes_a_session_never_a_variable_in_the_env():
    forged = build_job_manifest(_spec(env={"GPUC_SESSION_PORT": "9000"}), OPTIONS, "gpuc-f")
    session = build_job_manifest(_spec(session_port=9000), OPTIONS, "gpuc-f")

    assert "gpu-commons/session" not in forged["metadata"]["labels"]
    container = forged["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in container
    assert container["command"][0] == "/bin/sh"
    assert not {"GPUC_SESSION_PORT", "GPUC_SESSION_FIXED_PORT", "GPUC_SESSION_TOKEN"} & {
        item["name"] for item in container["env"]
    }
    assert session["metadata"]["labels"]["gpu-commons/session"] == "true"
    ports = session["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["containerPort"] for p in ports] == [9000]


def test_a_session_whose_app_picks_its_port_listens_on_8888_in_its_pod():
    manifest = build_job_manifest(_spec(session_port=0), OPTIONS, "gpuc-f")

    ports = manifest["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["containerPort"] for p in ports] == [8888]


def test_the_proxy_reaches_a_session_at_its_services_ipv4_cluster_ip_else_its_dns_name():
    meta = {"name": "gpuc-x", "namespace": "gpuc-f"}

    dual = {
        "metadata": meta,
        "spec": {"clusterIP": "fd00::7", "clusterIPs": ["fd00::7", "10.0.0.7"]},
    }
    ipv6 = {"metadata": meta, "spec": {"clusterIP": "fd00::7", "clusterIPs": ["fd00::7"]}}

    assert service_host({"metadata": meta, "spec": {"clusterIP": "10.96.0.12"}}) == "10.96.0.12"
    assert service_host(dual) == "10.0.0.7"
    assert service_host(ipv6) == "gpuc-x.gpuc-f.svc"
    assert service_host({"metadata": meta, "spec": {"clusterIP": "None"}}) == "gpuc-x.gpuc-f.svc"


# --- states ----------------------------------------------------------------------------------


def test_a_job_with_no_ready_pod_is_queued():
    job = _job({"startTime": "2025-03-01T11:00:00Z", "active": 1, "ready": 0})
    assert status_from_job(job, now=NOW).state == "queued"


def test_a_job_with_a_ready_pod_is_running_since_its_start_time():
    job = _job({"startTime": "2025-03-01T11:00:00Z", "active": 1, "ready": 1})
    status = status_from_job(job, now=NOW)
    assert status.state == "running"
    assert status.started_at == datetime(2025, 3, 1, 11, 0, tzinfo=UTC)
    assert status.backend_id == f"gpuc-folding/{job_name(UUID)}"


def test_a_suspended_job_waits_in_the_queue():
    job = _job({"conditions": [_condition("Suspended", "JobSuspended", "2025-03-01T11:00:00Z")]})
    assert status_from_job(job, now=NOW).state == "queued"


def test_the_complete_condition_means_completed_at_the_completion_time():
    job = _job(
        {
            "startTime": "2025-03-01T11:00:00Z",
            "completionTime": "2025-03-01T11:30:00Z",
            "succeeded": 1,
            "conditions": [
                _condition("SuccessCriteriaMet", "CompletionsReached", "2025-03-01T11:30:00Z"),
                _condition("Complete", "CompletionsReached", "2025-03-01T11:30:00Z"),
            ],
        }
    )
    status = status_from_job(job, now=NOW)
    assert (status.state, status.exit_code) == ("completed", 0)
    assert status.ended_at == datetime(2025, 3, 1, 11, 30, tzinfo=UTC)


def test_a_deadline_failure_is_a_timeout():
    job = _job(
        {
            "startTime": "2025-03-01T11:00:00Z",
            "failed": 1,
            "conditions": [
                _condition(
                    "FailureTarget",
                    "DeadlineExceeded",
                    "2025-03-01T11:01:00Z",
                    "Job was active longer than specified deadline",
                ),
                _condition(
                    "Failed",
                    "DeadlineExceeded",
                    "2025-03-01T11:01:00Z",
                    "Job was active longer than specified deadline",
                ),
            ],
        }
    )
    status = status_from_job(job, now=NOW)
    assert status.state == "timeout"
    assert status.ended_at == datetime(2025, 3, 1, 11, 1, tzinfo=UTC)
    assert "deadline" in status.reason


def test_any_other_failure_is_failed_with_the_containers_exit_code():
    job = _job(
        {
            "startTime": "2025-03-01T11:00:00Z",
            "failed": 1,
            "conditions": [_condition("Failed", "BackoffLimitExceeded", "2025-03-01T11:05:00Z")],
        }
    )
    pods = [_pod("p-1", job_name(UUID), exit_code=3, phase="Failed")]
    status = status_from_job(job, now=NOW, exit_info=pod_exit_info(pods))
    assert (status.state, status.exit_code) == ("failed", 3)
    assert status.ended_at == datetime(2025, 3, 1, 11, 5, tzinfo=UTC)


def test_an_evicted_pod_makes_a_node_failure():
    job = _job({"conditions": [_condition("Failed", "BackoffLimitExceeded", "x")]})
    job["status"]["conditions"][0]["lastTransitionTime"] = "2025-03-01T11:05:00Z"
    pods = [_pod("p-1", job_name(UUID), exit_code=None, phase="Failed", reason="Evicted")]
    assert status_from_job(job, now=NOW, exit_info=pod_exit_info(pods)).state == "node_fail"


def test_the_pod_that_failed_first_gives_the_exit_code_not_the_ones_killed_after():
    killed = _pod(
        "a-0", job_name(UUID), exit_code=137, phase="Failed", reason="BackoffLimitExceeded"
    )
    culprit = _pod("b-1", job_name(UUID), exit_code=3, phase="Failed")
    info = pod_exit_info([killed, culprit])
    assert info[f"gpuc-folding/{job_name(UUID)}"] == (3, "Error")


def test_a_job_being_deleted_before_it_finished_is_cancelled_at_the_deletion_time():
    job = _job(
        {"startTime": "2025-03-01T11:00:00Z", "active": 1, "ready": 1},
        deletionTimestamp="2025-03-01T11:10:00Z",
    )
    status = status_from_job(job, now=NOW)
    assert status.state == "cancelled"
    assert status.ended_at == datetime(2025, 3, 1, 11, 10, tzinfo=UTC)


def test_a_finished_job_being_cleaned_up_keeps_its_final_state():
    job = _job(
        {
            "startTime": "2025-03-01T11:00:00Z",
            "completionTime": "2025-03-01T11:30:00Z",
            "conditions": [_condition("Complete", "CompletionsReached", "2025-03-01T11:30:00Z")],
        },
        deletionTimestamp="2025-03-08T11:30:00Z",
    )
    assert status_from_job(job, now=NOW).state == "completed"


# --- usage -----------------------------------------------------------------------------------


def test_usage_is_wall_time_times_the_requested_resources():
    job = _job(
        {
            "startTime": "2025-03-01T11:00:00Z",
            "completionTime": "2025-03-01T11:30:00Z",
            "conditions": [_condition("Complete", "CompletionsReached", "2025-03-01T11:30:00Z")],
        }
    )
    record = usage_from_job(job, now=NOW)
    assert (record.elapsed_seconds, record.gpus, record.gpu_type) == (1800, 2, "h100")
    assert (record.cpus, record.memory_mb, record.tasks) == (4, 8192, 1)


def test_usage_of_a_cancelled_job_runs_to_its_deletion():
    job = _job(
        {"startTime": "2025-03-01T11:00:00Z", "active": 1, "ready": 1},
        deletionTimestamp="2025-03-01T11:15:00Z",
    )
    assert usage_from_job(job, now=NOW).elapsed_seconds == 900


def test_usage_of_an_array_counts_the_indexes_that_ran_at_once():
    job = _job(
        {
            "startTime": "2025-03-01T11:00:00Z",
            "completionTime": "2025-03-01T11:10:00Z",
            "conditions": [_condition("Complete", "CompletionsReached", "2025-03-01T11:10:00Z")],
        }
    )
    job["spec"].update(completionMode="Indexed", completions=10, parallelism=3)
    record = usage_from_job(job, now=NOW)
    assert (record.elapsed_seconds, record.tasks) == (600, 3)


def test_a_job_that_never_started_used_nothing():
    job = _job({}, deletionTimestamp="2025-03-01T11:15:00Z")
    assert usage_from_job(job, now=NOW).elapsed_seconds == 0
