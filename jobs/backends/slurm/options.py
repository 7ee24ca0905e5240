"""Checks of a Slurm cluster's options (the system check) and of one job against them (before
anything is held or sent). No network calls here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from jobs.backends.base import JobSpec

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Paths go into the job's wrapper script and its working directory: keep them plain.
PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
API_RE = re.compile(r"^v0\.0\.3[89]$")
FORBIDDEN_USERS = frozenset({"root", "slurm", "nobody"})
POSITIVE_INTS = ("max_gpus", "max_cpus", "max_memory_mb", "max_time_minutes", "max_array_tasks")
NUMBERS = (
    "connect_timeout",
    "read_timeout",
    "jwt_lifetime_seconds",
    "pool_size",
    "direct_overlap_seconds",
)
KNOWN = frozenset(
    {
        "url",
        "api_version",
        "jwt_key_file",
        "jwt_key_env",
        "jwt_lifetime_seconds",
        "query_user",
        "shared_root",
        "shared_mount",
        "partition",
        "partitions",
        "default_partition",
        "account",
        "gpu_types",
        "accounting",
        "connect_timeout",
        "read_timeout",
        "pool_size",
        "direct_overlap_seconds",
        "path",
        "allowed_projects",
        "allowed_organizations",
        *POSITIVE_INTS,
    }
)


def check_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with a Slurm cluster's options, as sentences (empty when valid)."""
    problems: list[str] = []
    url = options.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        problems.append("url must be slurmrestd's address, like http://slurm-rest:6820.")
    version = options.get("api_version", "v0.0.38")
    if not isinstance(version, str) or not API_RE.match(version):
        problems.append("api_version must be v0.0.38 (the version this backend speaks).")
    if "jwt_key" in options or "token" in options:
        problems.append(
            "Never store the JWT key in the cluster options: name it with jwt_key_file or "
            "jwt_key_env."
        )
    sources = [key for key in ("jwt_key_file", "jwt_key_env") if options.get(key)]
    if len(sources) != 1:
        got = ", ".join(sources) or "none"
        problems.append(
            "Give exactly one of jwt_key_file (the slurm.conf jwt_key path) or jwt_key_env "
            f"(an environment variable holding the key in base64); got {got}."
        )
    key_file = options.get("jwt_key_file")
    if key_file and (not isinstance(key_file, str) or not key_file.startswith("/")):
        problems.append("jwt_key_file must be an absolute path.")
    key_env = options.get("jwt_key_env")
    if key_env and (not isinstance(key_env, str) or not ENV_RE.match(key_env)):
        problems.append("jwt_key_env must be the name of an environment variable.")
    query_user = options.get("query_user", "slurm")
    if not isinstance(query_user, str) or not USER_RE.match(query_user) or query_user == "root":
        problems.append(
            "query_user (who lists jobs and reads accounting) must be a cluster user name, "
            "never root."
        )
    for key in ("shared_root", "shared_mount"):
        value = options.get(key)
        if key == "shared_mount" and value is None:
            continue
        if not isinstance(value, str) or not PATH_RE.match(value) or ".." in value.split("/"):
            problems.append(
                f"{key} must be an absolute path of plain characters (letters, digits, "
                "'.', '_', '-', '+', '/')."
            )
        elif str(PurePosixPath(value)) == "/":
            problems.append(f"{key} must not be the root directory.")
    for key in ("partition", "default_partition", "account"):
        value = options.get(key)
        if value is not None and (not isinstance(value, str) or not NAME_RE.match(value)):
            problems.append(f"{key} must be a Slurm name (letters, digits, '.', '_', '-').")
    partitions = options.get("partitions")
    if partitions is not None:
        names = list(partitions) if isinstance(partitions, list | dict) else None
        if names is None or not all(isinstance(n, str) and NAME_RE.match(n) for n in names):
            problems.append("partitions must be a list (or object) of Slurm partition names.")
        elif options.get("partition") and options["partition"] not in names:
            problems.append(f"partition {options['partition']} is not one of partitions.")
    types = options.get("gpu_types", [])
    if not isinstance(types, list) or not all(
        isinstance(t, str) and re.match(r"^[A-Za-z0-9_.-]{1,64}$", t) for t in types
    ):
        problems.append("gpu_types must be a list of GRES type names (like h100).")
    for key in POSITIVE_INTS:
        if key in options and (
            isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < 1
        ):
            problems.append(f"{key} must be a positive whole number.")
    for key in NUMBERS:
        if key in options and (
            isinstance(options[key], bool)
            or not isinstance(options[key], int | float)
            or options[key] <= 0
        ):
            problems.append(f"{key} must be a positive number.")
    if "accounting" in options and not isinstance(options["accounting"], bool):
        problems.append("accounting must be true (slurmdbd runs) or false.")
    path = options.get("path")
    if path is not None and (not isinstance(path, str) or "\n" in path or not path):
        problems.append("path must be the PATH jobs start with, like /usr/local/bin:/usr/bin:/bin.")
    unknown = sorted(set(options) - KNOWN)
    if unknown:
        problems.append(f"Unknown Slurm options: {', '.join(unknown)}.")
    return problems


def validate_spec(spec: JobSpec, options: Mapping[str, Any], cluster: str) -> list[tuple[str, str]]:
    """(field, message) for everything in `spec` this cluster would refuse."""
    errors: list[tuple[str, str]] = []
    if spec.image:
        errors.append(
            ("image", f"Cluster {cluster} runs batch scripts; container images are not supported.")
        )
    if spec.script and spec.command:
        errors.append(("command", "Give either a script or a command, not both."))
    if not spec.script.strip() and not spec.command:
        errors.append(("script", f"Cluster {cluster} needs a script to run."))
    if spec.cluster_user and (
        spec.cluster_user in FORBIDDEN_USERS or not USER_RE.match(spec.cluster_user)
    ):
        errors.append(("cluster", f"Jobs never run as '{spec.cluster_user}' on cluster {cluster}."))
    if not NAME_RE.match(spec.name or ""):
        errors.append(
            (
                "name",
                "On Slurm clusters a job name is at most 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit.",
            )
        )
    if spec.partition and not NAME_RE.match(spec.partition):
        errors.append(("partition", "partition must be a Slurm partition name."))
    if spec.cpus < 1:
        errors.append(("cpus", "A job needs at least 1 CPU."))
    if spec.memory_mb < 1:
        errors.append(("memory_mb", "A job needs some memory (memory_mb at least 1)."))
    if spec.time_limit_minutes < 1:
        errors.append(("time_limit_minutes", "The time limit must be at least 1 minute."))
    if spec.gpus and spec.gpu_type and not re.match(r"^[A-Za-z0-9_.-]{1,64}$", spec.gpu_type):
        errors.append(("gpu_type", "gpu_type must be a GRES type name."))
    return errors
