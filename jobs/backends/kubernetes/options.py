"""Checks of a Kubernetes cluster's options (the system check) and of one job against them
(before anything is held or sent)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobs.backends.base import JobSpec
from jobs.backends.kubernetes.objects import (
    DEFAULT_MAX_ARRAY_TASKS,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME,
    QUALIFIED_NAME,
    image_allowed,
    is_label_value,
    parse_array,
)

_CONNECTION_KEYS = ("token_env", "token_file", "kubeconfig", "in_cluster")
_POSITIVE_INTS = (
    "max_gpus",
    "max_cpus",
    "max_memory_mb",
    "max_time_minutes",
    "max_array_tasks",
    "list_page_size",
)
DEFAULT_LIST_PAGE_SIZE = 500


def is_positive_int(value: Any) -> bool:
    """A whole number of at least 1 (true and false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with a Kubernetes cluster's options, as sentences (empty when valid)."""
    problems: list[str] = []
    if "token" in options:
        problems.append(
            "Never store a token in the cluster options: name it with token_env or token_file."
        )
    sources = [key for key in _CONNECTION_KEYS if options.get(key)]
    if len(sources) != 1:
        problems.append(
            "Give exactly one way to authenticate: token_env, token_file, kubeconfig or "
            f"in_cluster (got {', '.join(sources) or 'none'})."
        )
    host = options.get("host", "")
    if (options.get("token_env") or options.get("token_file")) and not str(host).startswith(
        ("https://", "http://")
    ):
        problems.append("host must be the API server URL, like https://k8s.example.org:6443.")
    if options.get("ca_file") and not Path(str(options["ca_file"])).is_absolute():
        problems.append("ca_file must be an absolute path to a CA bundle.")
    if "verify_ssl" in options and not isinstance(options["verify_ssl"], bool):
        problems.append("verify_ssl must be true or false.")
    if options.get("token_env") and not ENV_NAME.match(str(options["token_env"])):
        problems.append("token_env must be the name of an environment variable.")
    if options.get("namespace"):
        if not DNS_LABEL.match(str(options["namespace"])):
            problems.append("namespace must be a DNS-1123 label (lowercase, digits, '-').")
    else:
        prefix = options.get("namespace_prefix", "gpuc-")
        if not isinstance(prefix, str) or not re.match(r"^[a-z0-9][-a-z0-9]{0,29}$", prefix):
            problems.append(
                "namespace_prefix must be up to 30 lowercase letters, digits or '-', "
                "starting with a letter or digit."
            )
    allowed = options.get("allowed_images", [])
    if not isinstance(allowed, list) or not all(isinstance(p, str) and p for p in allowed):
        problems.append("allowed_images must be a list of image names or glob patterns.")
        allowed = []
    default_image = options.get("default_image", "")
    if not allowed and not default_image:
        problems.append("Give allowed_images or a default_image: no image could run.")
    if default_image and allowed and not image_allowed(default_image, allowed):
        problems.append(f"default_image {default_image} is not in allowed_images.")
    gpu_resource = options.get("gpu_resource", "nvidia.com/gpu")
    if not isinstance(gpu_resource, str) or not QUALIFIED_NAME.match(gpu_resource):
        problems.append("gpu_resource must be a resource name like nvidia.com/gpu.")
    gpu_types = options.get("gpu_types", [])
    if not isinstance(gpu_types, list) or not all(isinstance(t, str) for t in gpu_types):
        problems.append("gpu_types must be a list of GPU type names.")
        gpu_types = []
    selectors = options.get("node_selectors", {})
    if not isinstance(selectors, dict) or not all(
        isinstance(sel, dict)
        and all(
            isinstance(k, str)
            and QUALIFIED_NAME.match(k)
            and isinstance(v, str)
            and is_label_value(v)
            for k, v in sel.items()
        )
        for sel in selectors.values()
    ):
        problems.append(
            "node_selectors must map each GPU type to {label: value} with valid labels."
        )
    elif gpu_types:
        unknown = sorted(set(selectors) - set(gpu_types))
        if unknown:
            problems.append(f"node_selectors names GPU types not in gpu_types: {unknown}.")
    if options.get("queue_name") and not is_label_value(str(options["queue_name"])):
        problems.append("queue_name must be a valid label value (the Kueue LocalQueue).")
    if options.get("priority_class") and not DNS_SUBDOMAIN.match(str(options["priority_class"])):
        problems.append("priority_class must be a PriorityClass name.")
    for key in _POSITIVE_INTS:
        if key in options and not is_positive_int(options[key]):
            problems.append(f"{key} must be a positive whole number.")
    for key in ("gpu_quota", "ttl_seconds_after_finished", "direct_overlap_seconds"):
        if key in options and (not isinstance(options[key], int) or options[key] < 0):
            problems.append(f"{key} must be a whole number of at least 0.")
    for key in ("run_as_user", "run_as_group"):
        if key in options and (not isinstance(options[key], int) or options[key] < 1000):
            problems.append(f"{key} must be a uid/gid of at least 1000 (never root).")
    results = [k for k in ("results_pvc", "results_nfs") if options.get(k)]
    paths = [k for k in ("results_mount_path", "results_host_path") if options.get(k)]
    if len(results) > 1:
        problems.append("Give results_pvc or results_nfs, not both.")
    if (results and len(paths) != 2) or (paths and not results):
        problems.append(
            "Results need results_pvc (or results_nfs) with results_mount_path and "
            "results_host_path together."
        )
    for key in paths:
        if not Path(str(options[key])).is_absolute():
            problems.append(f"{key} must be an absolute path.")
    if options.get("results_pvc") and not DNS_SUBDOMAIN.match(str(options["results_pvc"])):
        problems.append("results_pvc must be a PersistentVolumeClaim name.")
    nfs = options.get("results_nfs")
    if nfs and not (isinstance(nfs, dict) and nfs.get("server") and nfs.get("path")):
        problems.append("results_nfs must be {server, path}.")
    return problems


def validate_spec(spec: JobSpec, options: Mapping[str, Any], cluster: str) -> list[tuple[str, str]]:
    """(field, message) for everything in `spec` this cluster would refuse."""
    errors: list[tuple[str, str]] = []
    opts = options
    if not is_label_value(spec.name) or not spec.name:
        errors.append(
            (
                "name",
                "On Kubernetes clusters a job name must be a valid label value: at most 63 "
                "letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
            )
        )
    image = spec.image or opts.get("default_image", "")
    allowed = opts.get("allowed_images") or []
    if not image:
        errors.append(("image", f"Cluster {cluster} needs a container image."))
    elif not image_allowed(image, allowed, opts.get("default_image", "")):
        shown = ", ".join(allowed) or opts.get("default_image", "")
        errors.append(
            (
                "image",
                f"Image {image} is not allowed on cluster {cluster} (allowed: {shown}).",
            )
        )
    command: Any = spec.command
    if (
        isinstance(command, (str, bytes))
        or not isinstance(command, Sequence)
        or not all(isinstance(part, str) for part in command)
    ):
        errors.append(("command", "command must be a list of strings."))
    elif spec.script and command:
        errors.append(("command", "Give either a script or a command, not both."))
    limits = {
        "gpus": ("max_gpus", spec.gpus),
        "cpus": ("max_cpus", spec.cpus),
        "memory_mb": ("max_memory_mb", spec.memory_mb),
        "time_limit_minutes": ("max_time_minutes", spec.time_limit_minutes),
    }
    for field_name, (option, value) in limits.items():
        if option in opts and value > opts[option]:
            errors.append(
                (field_name, f"At most {opts[option]} on cluster {cluster} (asked {value}).")
            )
    if spec.cpus < 1:
        errors.append(("cpus", "A job needs at least 1 CPU."))
    if spec.time_limit_minutes < 1:
        errors.append(("time_limit_minutes", "The time limit must be at least 1 minute."))
    gpu_types = opts.get("gpu_types") or []
    if spec.gpu_type and gpu_types and spec.gpu_type not in gpu_types:
        errors.append(("gpu_type", f"Cluster {cluster} has GPU types {', '.join(gpu_types)}."))
    try:
        array = parse_array(spec.array)
    except ValueError as exc:
        errors.append(("array", str(exc)))
    else:
        most = opts.get("max_array_tasks", DEFAULT_MAX_ARRAY_TASKS)
        if array and array[0] > most:
            errors.append(("array", f"At most {most} array tasks on cluster {cluster}."))
    bad_env = [k for k in spec.env if not isinstance(k, str) or not ENV_NAME.match(k)]
    if bad_env:
        errors.append(("env", f"Invalid environment variable names: {', '.join(bad_env)}."))
    elif any(not isinstance(v, str) for v in spec.env.values()):
        errors.append(("env", "Environment variable values must be strings."))
    return errors
