"""A project's account on Kubernetes: its namespace, the one ResourceQuota the portal keeps in
it, and the finished Jobs found in it that the portal did not create (direct work). Pure
functions over dicts in the API's own shape; backend.py makes the calls.

The quota (named QUOTA_NAME, labelled managed-by gpu-commons) holds:
- `requests.<gpu_resource>: N`, the project's concurrent GPU cap (AccountSpec.gpu_cap, else the
  cluster's `gpu_quota` option). Extended resources can only be limited with the `requests.`
  prefix (they cannot be overcommitted, so requests equal limits).
- `pods: "0"` while the account may start no new work (AccountSpec.blocked or closed). `pods` counts
  Pods in a non-terminal phase and quota admission refuses (403) a Pod that would exceed it, so
  no Job's next Pod can be created: new Jobs, the remaining indexes of a running Indexed Job,
  retries after a failure and the portal's own not-yet-started Jobs all wait (the Job
  controller keeps retrying and the Pods appear once the block is lifted). `count/jobs.batch`
  would not do: it counts finished Jobs too (they live until their TTL) and leaves Jobs that
  already exist free to make Pods. A quota never evicts: Pods running when the block lands run
  to their end.
A quota with nothing to limit is kept with an empty `hard`, so that one listing of the quotas
tells which managed namespaces exist and what they hold.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobs.backends.base import AccountSpec, DirectRecord, UsageRecord
from jobs.backends.kubernetes.objects import (
    MANAGED_BY_LABEL,
    MANAGER,
    PROJECT_LABEL,
    USER_ANNOTATION,
    UUID_LABEL,
    backend_id_of,
    label_value,
    namespace_for,
    parse_quantity,
    parse_time,
)

QUOTA_NAME = "gpu-commons"
# How far each direct-work window reaches back before the listing's time: the Job controller
# writes a Job's completion a little after the time it records in it (more when it is busy).
DIRECT_OVERLAP_SECONDS = 120
BLOCK_RESOURCE = "pods"
# Set by whoever launches a direct Job and wants it attributed (label or annotation).
DIRECT_USER_KEYS = (USER_ANNOTATION, "gpu-commons/user")


def project_namespace(options: Mapping[str, Any], project: str) -> str:
    """The namespace (SchedulerAccount.name) of a project (JobSpec.project, organization
    qualified) on a Kubernetes cluster with these options: the fixed `namespace` if set, else
    `namespace_prefix` + project made DNS-1123 safe."""
    if options.get("namespace"):
        return str(options["namespace"])
    return namespace_for(str(options.get("namespace_prefix", "gpuc-")), project)


def wanted_quota(spec: AccountSpec, options: Mapping[str, Any]) -> dict[str, str]:
    """The `spec.hard` the project's quota should carry (see the module docstring)."""
    hard: dict[str, str] = {}
    cap = spec.gpu_cap if spec.gpu_cap is not None else options.get("gpu_quota")
    if cap is not None:
        hard[f"requests.{options.get('gpu_resource', 'nvidia.com/gpu')}"] = str(int(cap))
    if spec.closed or spec.blocked:
        hard[BLOCK_RESOURCE] = "0"
    return hard


def same_hard(current: Mapping[str, Any] | None, wanted: Mapping[str, str]) -> bool:
    """Whether a quota's `spec.hard` already says `wanted` (quantities compared as numbers, as
    the API server may write them in canonical form)."""
    current = current or {}
    if set(current) != set(wanted):
        return False
    try:
        return all(parse_quantity(current[k]) == parse_quantity(v) for k, v in wanted.items())
    except ValueError:
        return False


def namespace_manifest(namespace: str, project: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGER, PROJECT_LABEL: label_value(project)},
        },
    }


def quota_manifest(namespace: str, hard: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGER},
        },
        "spec": {"hard": dict(hard)},
    }


# --- direct work -------------------------------------------------------------------------


def job_end(job: Mapping[str, Any]) -> tuple[str, datetime, str] | None:
    """(portal state, end, reason) of a finished Job: Complete (completionTime) or Failed (its
    condition's lastTransitionTime and message; DeadlineExceeded is a timeout); None while it
    runs (FailureTarget alone: its Pods are still being stopped)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            end = parse_time(status.get("completionTime") or condition.get("lastTransitionTime"))
            return ("completed", end, "") if end else None
        if condition.get("type") == "Failed":
            end = parse_time(condition.get("lastTransitionTime"))
            state = "timeout" if condition.get("reason") == "DeadlineExceeded" else "failed"
            reason = str(condition.get("message") or condition.get("reason") or "")
            return (state, end, reason) if end else None
    return None


def pod_requests(pod_spec: Mapping[str, Any], gpu_resource: str) -> tuple[int, float, float]:
    """(GPUs, CPU cores, memory bytes) one Pod of this template asks for, as the scheduler
    counts them: the containers' sum, or the largest init container if that is more. A
    resource given only as a limit is requested at the limit (Kubernetes' defaulting)."""

    def amounts(container: Mapping[str, Any]) -> tuple[float, float, float]:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}

        def one(name: str) -> float:
            value = requests.get(name, limits.get(name))
            if value is None:
                return 0.0
            try:
                return parse_quantity(value)
            except ValueError:
                return 0.0

        return one(gpu_resource), one("cpu"), one("memory")

    main = [amounts(c) for c in pod_spec.get("containers") or []]
    init = [amounts(c) for c in pod_spec.get("initContainers") or []]
    totals = [sum(values) for values in zip(*main, strict=True)] if main else [0.0, 0.0, 0.0]
    for gpus, cpus, memory in init:
        totals = [max(totals[0], gpus), max(totals[1], cpus), max(totals[2], memory)]
    return math.ceil(totals[0]), totals[1], totals[2]


def gpu_type_of(pod_spec: Mapping[str, Any], node_selectors: Mapping[str, Any]) -> str:
    """The GPU type whose node selector (the `node_selectors` option) the Pod's nodeSelector
    contains; the most specific wins; "" when none does."""
    chosen = pod_spec.get("nodeSelector") or {}
    matches = [
        (len(selector), gpu_type)
        for gpu_type, selector in node_selectors.items()
        if selector and all(chosen.get(k) == v for k, v in selector.items())
    ]
    if not matches:
        return ""
    return min(matches, key=lambda m: (-m[0], m[1]))[1]


def direct_backend_id(job: Mapping[str, Any]) -> str:
    """ "<namespace>/<Job uid>": a Job deleted and made again under the same name is new work,
    so the uid (not the name) identifies it; at most 63 + 1 + 36 characters."""
    meta = job.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('uid', '')}"


def is_direct_backend_id(backend_id: str) -> bool:
    _, _, tail = backend_id.partition("/")
    try:
        uuid.UUID(tail)
    except ValueError:
        return False
    return True


def direct_record(
    job: Mapping[str, Any],
    *,
    gpu_resource: str,
    node_selectors: Mapping[str, Any],
) -> DirectRecord | None:
    """The DirectRecord of a finished Job (None while it runs, or when no Pod of it ever ran:
    nothing to charge).

    A Job carrying the portal's uuid label is passed on with portal_uuid and
    portal_backend_id ("<namespace>/<name>", the id a portal job has): anyone can write a label,
    so the portal decides whether it is one of its own jobs.

    Usage = the Job's span (status.startTime to its end) x the resources one Pod requests x the
    Pods that can have run at once: min(parallelism, completions, succeeded + failed). Exact for
    a single Pod and for Pods that ran side by side; an upper bound otherwise (the Job status
    keeps no per-Pod times), like the portal's own Jobs. CPUs are rounded up to whole cores
    (at least 1), memory up to whole MiB. The user is the `gpu-commons/cluster-user` (or
    `gpu-commons/user`) label or annotation of the Job, else the Pods' service account, else ""."""
    end = job_end(job)
    status = job.get("status") or {}
    started = parse_time(status.get("startTime"))
    if end is None:
        return None
    state, ended, reason = end
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    gpus, cpus, memory = pod_requests(pod_spec, gpu_resource)
    parallelism = int(spec.get("parallelism") or 1)
    completions = int(spec.get("completions") or parallelism)  # unset: a work queue
    ran = int(status.get("succeeded") or 0) + int(status.get("failed") or 0)
    if not ran:
        return None
    tasks = max(1, min(parallelism, completions, ran))
    elapsed = max(0, int((ended - started).total_seconds())) if started else 0
    tags = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
    user = next((tags[k] for k in DIRECT_USER_KEYS if tags.get(k)), "")
    user = user or pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or ""
    backend_id = direct_backend_id(job)
    tag = str((meta.get("labels") or {}).get(UUID_LABEL) or "")
    usage = UsageRecord(
        backend_id=backend_id,
        elapsed_seconds=elapsed,
        gpus=gpus,
        gpu_type=gpu_type_of(pod_spec, node_selectors),
        cpus=max(1, math.ceil(cpus)),
        memory_mb=math.ceil(memory / 2**20),
        tasks=tasks,
        started_at=started,
        ended_at=ended,
        raw={
            "source": "kubernetes",
            "job": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "parallelism": parallelism,
            "completions": spec.get("completions"),
            "succeeded": int(status.get("succeeded") or 0),
            "failed": int(status.get("failed") or 0),
        },
    )
    return DirectRecord(
        backend_id=backend_id,
        account=str(meta.get("namespace", "")),
        cluster_user=str(user),
        name=str(meta.get("name", "")),
        state=state,
        usage=usage,
        exit_code=0 if state == "completed" else None,
        submitted_at=parse_time(meta.get("creationTimestamp")),
        portal_uuid=tag,
        portal_backend_id=backend_id_of(job) if tag else "",
        reason=reason[:500],
    )
