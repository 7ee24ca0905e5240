"""Checks of a Kubernetes cluster's options (the system check) and of one job against them
(before anything is held or sent)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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
from jobs.backends.rules import (
    AT_LEAST_ONE_CPU,
    AT_LEAST_ONE_MINUTE,
    SCRIPT_OR_COMMAND,
    Check,
    Option,
    Refuse,
    SpecCheck,
    When,
    exactly_one,
    is_command,
    is_positive_int,
    never_stored,
    problems,
    refusals,
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
NAMESPACE_PREFIX = re.compile(r"^[a-z0-9][-a-z0-9]{0,29}$")


def _is_absolute(value: Any) -> bool:
    return Path(str(value)).is_absolute()


def _matches(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    """The value, as text, matches (options read from JSON may be of any type)."""
    return lambda value: bool(pattern.match(str(value)))


def _host(options: Mapping[str, Any]) -> list[str]:
    token = options.get("token_env") or options.get("token_file")
    if token and not str(options.get("host", "")).startswith(("https://", "http://")):
        return ["host must be the API server URL, like https://k8s.example.org:6443."]
    return []


def _namespace(options: Mapping[str, Any]) -> list[str]:
    if options.get("namespace"):
        if not DNS_LABEL.match(str(options["namespace"])):
            return ["namespace must be a DNS-1123 label (lowercase, digits, '-')."]
        return []
    prefix = options.get("namespace_prefix", "gpuc-")
    if not isinstance(prefix, str) or not NAMESPACE_PREFIX.match(prefix):
        return [
            "namespace_prefix must be up to 30 lowercase letters, digits or '-', "
            "starting with a letter or digit."
        ]
    return []


def _images(options: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    allowed = options.get("allowed_images", [])
    if not isinstance(allowed, list) or not all(isinstance(p, str) and p for p in allowed):
        found.append("allowed_images must be a list of image names or glob patterns.")
        allowed = []
    default_image = options.get("default_image", "")
    if not allowed and not default_image:
        found.append("Give allowed_images or a default_image: no image could run.")
    if default_image and allowed and not image_allowed(default_image, allowed):
        found.append(f"default_image {default_image} is not in allowed_images.")
    return found


def _type_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, str) for t in value)


def _selector_map(value: Any) -> bool:
    """{GPU type: {label: value}} with valid label names and values."""
    return isinstance(value, dict) and all(
        isinstance(selector, dict)
        and all(
            isinstance(k, str)
            and QUALIFIED_NAME.match(k)
            and isinstance(v, str)
            and is_label_value(v)
            for k, v in selector.items()
        )
        for selector in value.values()
    )


def _node_selectors(options: Mapping[str, Any]) -> list[str]:
    selectors = options.get("node_selectors", {})
    if not _selector_map(selectors):
        return ["node_selectors must map each GPU type to {label: value} with valid labels."]
    gpu_types = options.get("gpu_types", [])
    unknown = sorted(set(selectors) - set(gpu_types)) if _type_names(gpu_types) else []
    if gpu_types and unknown:
        return [f"node_selectors names GPU types not in gpu_types: {unknown}."]
    return []


def _results(options: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    results = [k for k in ("results_pvc", "results_nfs") if options.get(k)]
    paths = [k for k in ("results_mount_path", "results_host_path") if options.get(k)]
    if len(results) > 1:
        found.append("Give results_pvc or results_nfs, not both.")
    if (results and len(paths) != 2) or (paths and not results):
        found.append(
            "Results need results_pvc (or results_nfs) with results_mount_path and "
            "results_host_path together."
        )
    return found


CHECKS: tuple[Check, ...] = (
    never_stored(
        ["token"],
        "Never store a token in the cluster options: name it with token_env or token_file.",
    ),
    exactly_one(
        _CONNECTION_KEYS,
        "Give exactly one way to authenticate: token_env, token_file, kubeconfig or "
        "in_cluster (got {got}).",
    ),
    _host,
    Option(
        "ca_file", _is_absolute, "ca_file must be an absolute path to a CA bundle.", When.TRUTHY
    ),
    Option("verify_ssl", lambda v: isinstance(v, bool), "verify_ssl must be true or false."),
    Option(
        "token_env",
        _matches(ENV_NAME),
        "token_env must be the name of an environment variable.",
        When.TRUTHY,
    ),
    _namespace,
    _images,
    Option(
        "gpu_resource",
        lambda v: isinstance(v, str) and QUALIFIED_NAME.match(v),
        "gpu_resource must be a resource name like nvidia.com/gpu.",
        When.ALWAYS,
        "nvidia.com/gpu",
    ),
    Option(
        "gpu_types", _type_names, "gpu_types must be a list of GPU type names.", When.ALWAYS, []
    ),
    _node_selectors,
    Option(
        "queue_name",
        lambda v: is_label_value(str(v)),
        "queue_name must be a valid label value (the Kueue LocalQueue).",
        When.TRUTHY,
    ),
    Option(
        "priority_class",
        _matches(DNS_SUBDOMAIN),
        "priority_class must be a PriorityClass name.",
        When.TRUTHY,
    ),
    *(
        Option(key, is_positive_int, f"{key} must be a positive whole number.")
        for key in _POSITIVE_INTS
    ),
    *(
        Option(
            key,
            lambda v: isinstance(v, int) and v >= 0,
            f"{key} must be a whole number of at least 0.",
        )
        for key in ("gpu_quota", "ttl_seconds_after_finished", "direct_overlap_seconds")
    ),
    *(
        Option(
            key,
            lambda v: isinstance(v, int) and v >= 1000,
            f"{key} must be a uid/gid of at least 1000 (never root).",
        )
        for key in ("run_as_user", "run_as_group")
    ),
    _results,
    *(
        Option(key, _is_absolute, f"{key} must be an absolute path.", When.TRUTHY)
        for key in ("results_mount_path", "results_host_path")
    ),
    Option(
        "results_pvc",
        _matches(DNS_SUBDOMAIN),
        "results_pvc must be a PersistentVolumeClaim name.",
        When.TRUTHY,
    ),
    Option(
        "results_nfs",
        lambda v: isinstance(v, dict) and v.get("server") and v.get("path"),
        "results_nfs must be {server, path}.",
        When.TRUTHY,
    ),
)


def check_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with a Kubernetes cluster's options, as sentences (empty when valid): CHECKS."""
    return problems(CHECKS, options)


def _image(spec: JobSpec, options: Mapping[str, Any]) -> str:
    return spec.image or options.get("default_image", "")


def _image_refused(spec: JobSpec, options: Mapping[str, Any]) -> bool:
    image = _image(spec, options)
    allowed = options.get("allowed_images") or []
    return bool(image) and not image_allowed(image, allowed, options.get("default_image", ""))


def _image_message(spec: JobSpec, options: Mapping[str, Any], cluster: str) -> str:
    shown = ", ".join(options.get("allowed_images") or []) or options.get("default_image", "")
    return f"Image {_image(spec, options)} is not allowed on cluster {cluster} (allowed: {shown})."


def _gpu_type_refused(spec: JobSpec, options: Mapping[str, Any]) -> bool:
    gpu_types = options.get("gpu_types") or []
    return bool(spec.gpu_type and gpu_types and spec.gpu_type not in gpu_types)


def _array(spec: JobSpec, options: Mapping[str, Any], cluster: str) -> list[tuple[str, str]]:
    try:
        array = parse_array(spec.array)
    except ValueError as exc:
        return [("array", str(exc))]
    most = options.get("max_array_tasks", DEFAULT_MAX_ARRAY_TASKS)
    if array and array[0] > most:
        return [("array", f"At most {most} array tasks on cluster {cluster}.")]
    return []


def _bad_env_names(spec: JobSpec) -> list[Any]:
    return [k for k in spec.env if not isinstance(k, str) or not ENV_NAME.match(k)]


# A JobSpec field -> the option that bounds it.
_LIMITS = {
    "gpus": "max_gpus",
    "cpus": "max_cpus",
    "memory_mb": "max_memory_mb",
    "time_limit_minutes": "max_time_minutes",
}


def _over(field: str, option: str) -> Refuse:
    return Refuse(
        field,
        lambda spec, options: option in options and getattr(spec, field) > options[option],
        f"At most {{options[{option}]}} on cluster {{cluster}} (asked {{spec.{field}}}).",
    )


SPEC_CHECKS: tuple[SpecCheck, ...] = (
    Refuse(
        "name",
        lambda spec, _: not is_label_value(spec.name) or not spec.name,
        "On Kubernetes clusters a job name must be a valid label value: at most 63 "
        "letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
    ),
    Refuse(
        "image",
        lambda spec, options: not _image(spec, options),
        "Cluster {cluster} needs a container image.",
    ),
    Refuse("image", _image_refused, _image_message),
    Refuse(
        "command",
        lambda spec, _: not is_command(spec.command),
        "command must be a list of strings.",
    ),
    SCRIPT_OR_COMMAND,
    *(_over(field, option) for field, option in _LIMITS.items()),
    AT_LEAST_ONE_CPU,
    AT_LEAST_ONE_MINUTE,
    Refuse(
        "gpu_type",
        _gpu_type_refused,
        lambda spec, options, cluster: (
            f"Cluster {cluster} has GPU types {', '.join(options.get('gpu_types') or [])}."
        ),
    ),
    _array,
    Refuse(
        "env",
        lambda spec, _: _bad_env_names(spec),
        lambda spec, options, cluster: (
            f"Invalid environment variable names: {', '.join(_bad_env_names(spec))}."
        ),
    ),
    Refuse(
        "env",
        lambda spec, _: (
            not _bad_env_names(spec) and any(not isinstance(v, str) for v in spec.env.values())
        ),
        "Environment variable values must be strings.",
    ),
)


def validate_spec(spec: JobSpec, options: Mapping[str, Any], cluster: str) -> list[tuple[str, str]]:
    """(field, message) for everything in `spec` this cluster would refuse: SPEC_CHECKS."""
    return refusals(SPEC_CHECKS, spec, options, cluster)
