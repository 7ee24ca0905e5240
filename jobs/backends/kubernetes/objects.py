"""Kubernetes objects for GPU Commons: names, labels, the Job manifest, and reading Jobs and
Pods back into portal states and usage. Pure functions over dicts in the API's own shape."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import ipaddress
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from jobs.backends.base import BackendError, JobSpec, JobStatus, UsageRecord

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "gpu-commons"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGER}"
UUID_LABEL = "gpu-commons/job-uuid"
PROJECT_LABEL = "gpu-commons/project"
NAME_LABEL = "gpu-commons/job-name"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "job-name"  # set on pods by the Job controller
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
GPU_TYPE_ANNOTATION = "gpu-commons/gpu-type"
USER_ANNOTATION = "gpu-commons/cluster-user"
CONTAINER = "main"
SCRIPT_DIR = "/gpuc/script"
SCRIPT_KEY = "job.sh"

DEFAULT_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_MAX_ARRAY_TASKS = 10_000
SNAPSHOT_SECONDS = 10.0  # how long poll()'s listing serves usage()
SELECTOR_CHUNK = 100  # uuids or names per `in (...)` selector, keeps URLs short

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARRAY = re.compile(r"^0(?:-(\d+))?(?:%(\d+))?$")
_STREAM = re.compile(r"^(stdout|stderr)(?:\.(\d+))?$")
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_QUANTITY_UNITS = {
    "": 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}

_COLLATERAL = ("DeadlineExceeded", "BackoffLimitExceeded", "Terminating")


# --- names and labels --------------------------------------------------------------------


def job_name(job_uuid: uuid.UUID) -> str:
    """The Kubernetes Job name of a portal job (stable, so resubmission meets 409)."""
    return f"gpuc-{job_uuid}"


def script_configmap_name(job_uuid: uuid.UUID) -> str:
    return f"gpuc-{job_uuid}-script"


# --- interactive sessions ----------------------------------------------------------------
# A JobSpec with a session_port (the portal sets it for a job of kind session, never from the
# job's env) is a session: its pod gets the port and the app's secret (GPUC_SESSION_TOKEN,
# from a Secret the backend makes, never in the Job or the script), and a ClusterIP Service
# gpuc-<uuid> selects the pod by its uuid label on that port. The portal's proxy reaches the
# Service's cluster IP (service_host). The Job carries SESSION_LABEL, which poll reads back.

SESSION_FIXED_PORT_ENV = "GPUC_SESSION_FIXED_PORT"  # the wrapper listens there, not at random
SESSION_LABEL = "gpu-commons/session"
SESSION_TOKEN_KEY = "token"  # noqa: S105 (the key in the Secret, not a secret)
SESSION_PORT_NAME = "session"
SESSION_DIR = "/gpuc/session"  # the wrapper's $GPUC_JOB_DIR: an emptyDir, never a result
DEFAULT_SESSION_PORT = 8888  # for apps that pick a free port: a pod has its own IP


def session_port(spec: JobSpec) -> int | None:
    """The port a session's app listens on in its pod; None for a batch job."""
    port = spec.session_port
    if port is None:
        return None
    if port == 0:
        return DEFAULT_SESSION_PORT
    return port if 0 < port < 65536 else None


def service_name(job_uuid: uuid.UUID) -> str:
    """The session's Service (a DNS-1035 label: starts with a letter, 41 characters)."""
    return job_name(job_uuid)


def session_secret_name(job_uuid: uuid.UUID) -> str:
    return f"gpuc-{job_uuid}-session"


def service_host(service: Mapping[str, Any]) -> str:
    """Where the portal's proxy reaches a session's Service: its IPv4 cluster IP (nginx proxies
    to a variable upstream, which it would resolve only through a `resolver` it is not given),
    else, on an IPv6-only cluster, its cluster DNS name <name>.<namespace>.svc."""
    spec = service.get("spec") or {}
    for address in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
        with contextlib.suppress(ValueError):
            if isinstance(ipaddress.ip_address(str(address)), ipaddress.IPv4Address):
                return str(address)
    meta = service.get("metadata") or {}
    return f"{meta.get('name', '')}.{meta.get('namespace', '')}.svc"


def build_service_manifest(
    spec: JobSpec, namespace: str, port: int, owner: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ClusterIP Service selecting the session's pod (by its uuid label) on `port`; owned
    by the Job when `owner` is given, so the garbage collector removes it with the Job."""
    metadata: dict[str, Any] = {
        "name": service_name(spec.uuid),
        "namespace": namespace,
        "labels": {
            MANAGED_BY_LABEL: MANAGER,
            UUID_LABEL: str(spec.uuid),
            SESSION_LABEL: "true",
        },
    }
    if owner and owner.get("uid"):
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {MANAGED_BY_LABEL: MANAGER, UUID_LABEL: str(spec.uuid)},
            "ports": [
                {
                    "name": SESSION_PORT_NAME,
                    "protocol": "TCP",
                    "port": port,
                    "targetPort": port,
                }
            ],
        },
    }


def build_session_secret(spec: JobSpec, namespace: str, token: str) -> dict[str, Any]:
    """The app's secret, handed to the pod as $GPUC_SESSION_TOKEN through secretKeyRef."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": session_secret_name(spec.uuid),
            "namespace": namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGER,
                UUID_LABEL: str(spec.uuid),
                SESSION_LABEL: "true",
            },
        },
        "stringData": {SESSION_TOKEN_KEY: token},
    }


def dns_label(text: str, *, max_length: int = 63) -> str:
    """`text` as a DNS-1123 label; when it had to change or shorten, a hash keeps it unique."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if cleaned == text and len(cleaned) <= max_length:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = cleaned[: max_length - len(digest) - 1].strip("-")
    return f"{head}-{digest}" if head else digest


def namespace_for(prefix: str, project: str) -> str:
    """The namespace of a project (JobSpec.project, organization-qualified): prefix + project,
    DNS-1123 safe and at most 63 long."""
    return dns_label(f"{prefix}{project}")


def label_value(text: str) -> str:
    """`text` as a label value (kept readable; hashed when it does not fit)."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    return dns_label(text)


def is_label_value(text: str) -> bool:
    return len(text) <= 63 and bool(_LABEL_VALUE.match(text))


def parse_array(array: str) -> tuple[int, int] | None:
    """(completions, parallelism) of an array spec "0-N[%P]"; None for a plain job."""
    if not array:
        return None
    match = _ARRAY.match(array.strip())
    if not match:
        raise ValueError(
            "On Kubernetes an array is a range of indexes from 0, like 0-9 or 0-9%2 "
            "(at most 2 running at once)."
        )
    completions = int(match.group(1) or 0) + 1
    parallelism = int(match.group(2)) if match.group(2) else completions
    if parallelism < 1:
        raise ValueError("The array's parallelism after % must be at least 1.")
    return completions, min(parallelism, completions)


def parse_stream(stream: str) -> tuple[str, int | None]:
    """("stdout"|"stderr", array index or None) from "stdout", "stderr" or "stdout.<index>"."""
    match = _STREAM.match(stream)
    if not match:
        raise BackendError(f"Unknown log stream {stream!r}: use stdout, stderr or stdout.<index>.")
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "8Gi", "2") as a number of base units."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _QUANTITY_UNITS:
        raise ValueError(f"not a resource quantity: {value!r}")
    return float(match.group(1)) * _QUANTITY_UNITS[match.group(2)]


def parse_time(value: str | None) -> datetime | None:
    """A Kubernetes RFC 3339 timestamp ("2025-01-01T00:00:00Z") as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def backend_id_of(job: Mapping[str, Any]) -> str:
    meta = job.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def split_backend_id(backend_id: str) -> tuple[str, str]:
    namespace, _, name = backend_id.partition("/")
    if not namespace or not name:
        raise BackendError(f"Not a Kubernetes job id: {backend_id!r} (expected namespace/name).")
    return namespace, name


# --- the Job manifest --------------------------------------------------------------------


def image_allowed(image: str, patterns: Sequence[str], default_image: str = "") -> bool:
    if image and image == default_image:
        return True
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def build_job_manifest(spec: JobSpec, options: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The batch/v1 Job for a portal job (a plain dict in Kubernetes' own shape)."""
    name = job_name(spec.uuid)
    labels = {
        MANAGED_BY_LABEL: MANAGER,
        UUID_LABEL: str(spec.uuid),
        PROJECT_LABEL: label_value(spec.project),
        NAME_LABEL: label_value(spec.name),
    }
    port = session_port(spec)
    if port is not None:
        labels[SESSION_LABEL] = "true"
    job_labels = dict(labels)
    if options.get("queue_name"):
        job_labels[QUEUE_LABEL] = options["queue_name"]
    annotations = {GPU_TYPE_ANNOTATION: spec.gpu_type, USER_ANNOTATION: spec.cluster_user}

    gpu_resource = options.get("gpu_resource", "nvidia.com/gpu")
    amounts = {"cpu": str(spec.cpus), "memory": f"{spec.memory_mb}Mi"}
    if spec.gpus:
        amounts[gpu_resource] = str(spec.gpus)

    # The portal refuses GPUC_* names in a job's env; a job stored before it did keeps them
    # here, and they never reach the pod (nor override the portal's own).
    env: list[dict[str, Any]] = [
        {"name": k, "value": str(v)} for k, v in spec.env.items() if not k.startswith("GPUC_")
    ]
    env += [
        {"name": "GPUC_JOB_UUID", "value": str(spec.uuid)},
        {"name": "GPUC_JOB_NAME", "value": spec.name},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or options.get("default_image", ""),
        "env": env,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [],
    }
    volumes: list[dict[str, Any]] = []
    if port is not None:
        env += [
            {"name": SESSION_FIXED_PORT_ENV, "value": str(port)},
            {
                "name": "GPUC_SESSION_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": session_secret_name(spec.uuid),
                        "key": SESSION_TOKEN_KEY,
                    }
                },
            },
            {"name": "GPUC_JOB_DIR", "value": SESSION_DIR},
        ]
        container["ports"] = [{"name": SESSION_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
        container["volumeMounts"].append({"name": "session", "mountPath": SESSION_DIR})
        volumes.append({"name": "session", "emptyDir": {}})
    if spec.script:
        # A session's wrapper is bash (process substitution, $RANDOM); a job script is sh.
        shell = "/bin/bash" if port is not None else "/bin/sh"
        container["command"] = [shell, f"{SCRIPT_DIR}/{SCRIPT_KEY}"]
        container["volumeMounts"].append(
            {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": "script",
                "configMap": {"name": script_configmap_name(spec.uuid), "defaultMode": 0o555},
            }
        )
    elif spec.command:
        container["command"] = list(spec.command)
    if options.get("results_mount_path"):
        mount_path = options["results_mount_path"]
        container["workingDir"] = mount_path
        env.append({"name": "GPUC_RESULTS_DIR", "value": mount_path})
        container["volumeMounts"].append(
            {"name": "results", "mountPath": mount_path, "subPath": str(spec.uuid)}
        )
        if options.get("results_pvc"):
            volumes.append(
                {"name": "results", "persistentVolumeClaim": {"claimName": options["results_pvc"]}}
            )
        else:
            nfs = options["results_nfs"]
            volumes.append(
                {"name": "results", "nfs": {"server": nfs["server"], "path": nfs["path"]}}
            )

    uid = int(options.get("run_as_user", 1000))
    gid = int(options.get("run_as_group", uid))
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    selector = (options.get("node_selectors") or {}).get(spec.gpu_type)
    if selector:
        pod_spec["nodeSelector"] = dict(selector)
    if options.get("priority_class"):
        pod_spec["priorityClassName"] = options["priority_class"]

    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": spec.time_limit_minutes * 60,
        "ttlSecondsAfterFinished": int(
            options.get("ttl_seconds_after_finished", DEFAULT_TTL_SECONDS)
        ),
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
    }
    array = parse_array(spec.array)
    if array:
        completions, parallelism = array
        job_spec.update(completionMode="Indexed", completions=completions, parallelism=parallelism)
        env.append(
            {
                "name": "GPUC_ARRAY_TASK_ID",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_LABEL}']"}},
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


# --- reading Jobs and Pods back ----------------------------------------------------------


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    conditions: list[Mapping[str, Any]] = (job.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _failure(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Failed condition (or FailureTarget, set first while the pods terminate)."""
    return _condition(job, "Failed") or _condition(job, "FailureTarget")


def needs_exit_code(job: Mapping[str, Any]) -> bool:
    """A failed Job whose exit code only its pods know (not a deadline, not deleted)."""
    failure = _failure(job)
    if not failure:
        return False
    return failure.get("reason") != "DeadlineExceeded"


def pod_exit_info(pods: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int | None, str]]:
    """{"namespace/job-name": (exit code, reason)} of failed Jobs' pods: the first failure wins."""
    info: dict[str, tuple[int | None, str]] = {}
    for pod in sorted(pods, key=_failure_rank):
        meta = pod.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        if not owner:
            continue
        key = f"{meta.get('namespace', '')}/{owner}"
        status = pod.get("status") or {}
        code: int | None = None
        reason = ""
        for container in status.get("containerStatuses") or []:
            if container.get("name") != CONTAINER:
                continue
            terminated = (container.get("state") or {}).get("terminated") or (
                container.get("lastState") or {}
            ).get("terminated")
            if terminated:
                code = terminated.get("exitCode")
                reason = terminated.get("reason") or ""
        if status.get("reason") in ("Evicted", "NodeLost", "UnexpectedAdmissionError"):
            reason = status["reason"]
        disrupted = any(
            c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if disrupted and not reason:
            reason = "DisruptionTarget"
        failed = status.get("phase") == "Failed" or (code not in (None, 0))
        if failed and (key not in info or info[key][0] in (None, 0)):
            info[key] = (code, reason)
    return info


def _failure_rank(pod: Mapping[str, Any]) -> tuple[bool, str, str]:
    """Pods the Job controller killed after another failed come last; then by finish time."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    collateral = bool(meta.get("deletionTimestamp")) or status.get("reason") in _COLLATERAL
    finished = ""
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        finished = terminated.get("finishedAt") or finished
    return collateral, finished or "~", meta.get("name", "")


def status_from_job(
    job: Mapping[str, Any],
    *,
    now: datetime,
    exit_info: Mapping[str, tuple[int | None, str]] | None = None,
) -> JobStatus:
    """The portal state of one Kubernetes Job (a dict in the API's shape)."""
    backend_id = backend_id_of(job)
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    started = parse_time(status.get("startTime"))
    done = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
    if done:
        ended = parse_time(status.get("completionTime") or done.get("lastTransitionTime"))
        return JobStatus(backend_id, "completed", exit_code=0, started_at=started, ended_at=ended)
    failed = _failure(job)
    if failed:
        ended = parse_time(failed.get("lastTransitionTime")) or now
        message = failed.get("message") or failed.get("reason") or ""
        if failed.get("reason") == "DeadlineExceeded":
            return JobStatus(
                backend_id, "timeout", started_at=started, ended_at=ended, reason=message
            )
        code, pod_reason = (exit_info or {}).get(backend_id, (None, ""))
        state = "failed"
        if pod_reason in ("Evicted", "NodeLost", "UnexpectedAdmissionError", "DisruptionTarget"):
            state = "node_fail"
        elif pod_reason == "OOMKilled":
            message = "The container ran out of memory (OOMKilled)."
        return JobStatus(
            backend_id, state, exit_code=code, started_at=started, ended_at=ended, reason=message
        )
    if meta.get("deletionTimestamp"):  # being deleted before it finished: cancelled
        return JobStatus(
            backend_id,
            "cancelled",
            started_at=started,
            ended_at=parse_time(meta["deletionTimestamp"]),
            reason="The Job was deleted.",
        )
    if (job.get("spec") or {}).get("suspend") or _condition(job, "Suspended"):
        return JobStatus(backend_id, "queued", reason="Waiting for admission to the queue.")
    ready = status.get("ready")
    progressed = (status.get("succeeded") or 0) + (status.get("failed") or 0)
    if (ready or 0) > 0 or progressed > 0:
        return JobStatus(backend_id, "running", started_at=started)
    if ready is None and status.get("active") and started:
        return JobStatus(backend_id, "running", started_at=started)  # API without `ready`
    return JobStatus(backend_id, "queued", started_at=started)


def usage_from_job(
    job: Mapping[str, Any], *, now: datetime, gpu_resource: str = "nvidia.com/gpu"
) -> UsageRecord:
    """Requested resources x wall time of one Job (end: completion, failure, deletion or now)."""
    state = status_from_job(job, now=now)
    spec = job.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or [{}]
    requests = ((containers[0].get("resources") or {}).get("requests")) or {}
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    gpus = int(parse_quantity(requests.get(gpu_resource, "0")))
    cpus = parse_quantity(requests.get("cpu", "1"))
    memory_mb = int(parse_quantity(requests.get("memory", "0")) // 2**20)
    completions = int(spec.get("completions") or 1)
    parallelism = int(spec.get("parallelism") or 1)
    start = state.started_at
    end = state.ended_at or now
    elapsed = max(0, int((end - start).total_seconds())) if start else 0
    return UsageRecord(
        backend_id=state.backend_id,
        elapsed_seconds=elapsed,
        gpus=gpus,
        gpu_type=annotations.get(GPU_TYPE_ANNOTATION, ""),
        cpus=max(1, math.ceil(cpus)),
        memory_mb=memory_mb,
        tasks=max(1, min(parallelism, completions)),
        started_at=start,
        ended_at=state.ended_at,
        raw={"state": state.state, "status": dict(job.get("status") or {})},
    )
