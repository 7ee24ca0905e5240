"""Checks of a Slurm cluster's options (the system check) and of one job against them (before
anything is held or sent). No network calls here."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from jobs.backends.base import JobSpec
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
    is_positive_int,
    is_positive_number,
    never_stored,
    problems,
    refusals,
    whole_in,
)
from jobs.backends.slurm import versions
from jobs.provisioning import ACCESS_OPTION_KEYS

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Paths go into the job's wrapper script and its working directory: keep them plain.
PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GRES_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
GPU_TRES_RE = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")
ACCOUNT_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")
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
        *ACCESS_OPTION_KEYS,
        "manage_accounts",
        "slurm_cluster",
        "operator_user",
        "gpu_tres",
        "billing_per_su",
        "account_prefix",
        "new_accounts_per_tick",
        "pushes_per_tick",
        *POSITIVE_INTS,
    }
)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _matches(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and bool(pattern.match(value))


def _plain_path(value: Any) -> bool:
    return _matches(PATH_RE)(value) and ".." not in value.split("/")


def _not_root(value: Any) -> bool:
    """Checked after _plain_path: only a plain path can be the root directory."""
    return not _plain_path(value) or str(PurePosixPath(value)) != "/"


def _api_version(options: Mapping[str, Any]) -> list[str]:
    problem = versions.check_pinned(options.get("api_version", versions.AUTO))
    return [problem] if problem else []


def _partitions(options: Mapping[str, Any]) -> list[str]:
    partitions = options.get("partitions")
    if partitions is None:
        return []
    names = list(partitions) if isinstance(partitions, list | dict) else None
    if names is None or not all(_matches(NAME_RE)(n) for n in names):
        return ["partitions must be a list (or object) of Slurm partition names."]
    if options.get("partition") and options["partition"] not in names:
        return [f"partition {options['partition']} is not one of partitions."]
    return []


def _gres_names(value: Any) -> bool:
    return isinstance(value, list) and all(_matches(GRES_RE)(t) for t in value)


def _known(options: Mapping[str, Any]) -> list[str]:
    unknown = sorted(set(options) - KNOWN)
    return [f"Unknown Slurm options: {', '.join(unknown)}."] if unknown else []


def _path_problem(key: str) -> str:
    return (
        f"{key} must be an absolute path of plain characters (letters, digits, "
        "'.', '_', '-', '+', '/')."
    )


CHECKS: tuple[Check, ...] = (
    Option(
        "url",
        _is_url,
        "url must be slurmrestd's address, like http://slurm-rest:6820.",
        When.ALWAYS,
    ),
    _api_version,
    never_stored(
        ["jwt_key", "token"],
        "Never store the JWT key in the cluster options: name it with jwt_key_file or jwt_key_env.",
    ),
    exactly_one(
        ["jwt_key_file", "jwt_key_env"],
        "Give exactly one of jwt_key_file (the slurm.conf jwt_key path) or jwt_key_env "
        "(an environment variable holding the key in base64); got {got}.",
    ),
    Option(
        "jwt_key_file",
        lambda v: isinstance(v, str) and v.startswith("/"),
        "jwt_key_file must be an absolute path.",
        When.TRUTHY,
    ),
    Option(
        "jwt_key_env",
        _matches(ENV_RE),
        "jwt_key_env must be the name of an environment variable.",
        When.TRUTHY,
    ),
    Option(
        "query_user",
        lambda v: _matches(USER_RE)(v) and v != "root",
        "query_user (who lists jobs and reads accounting) must be a cluster user name, never root.",
        When.ALWAYS,
        "slurm",
    ),
    Option("shared_root", _plain_path, _path_problem("shared_root"), When.ALWAYS),
    Option("shared_root", _not_root, "shared_root must not be the root directory.", When.ALWAYS),
    Option("shared_mount", _plain_path, _path_problem("shared_mount"), When.GIVEN),
    Option("shared_mount", _not_root, "shared_mount must not be the root directory.", When.GIVEN),
    *(
        Option(
            key,
            _matches(NAME_RE),
            f"{key} must be a Slurm name (letters, digits, '.', '_', '-').",
            When.GIVEN,
        )
        for key in ("partition", "default_partition", "account")
    ),
    _partitions,
    Option(
        "gpu_types",
        _gres_names,
        "gpu_types must be a list of GRES type names (like h100).",
        When.ALWAYS,
        [],
    ),
    *(
        Option(key, is_positive_int, f"{key} must be a positive whole number.")
        for key in POSITIVE_INTS
    ),
    *(Option(key, is_positive_number, f"{key} must be a positive number.") for key in NUMBERS),
    Option(
        "accounting",
        lambda v: isinstance(v, bool),
        "accounting must be true (slurmdbd runs) or false.",
    ),
    Option(
        "path",
        lambda v: isinstance(v, str) and bool(v) and "\n" not in v,
        "path must be the PATH jobs start with, like /usr/local/bin:/usr/bin:/bin.",
        When.GIVEN,
    ),
    lambda options: _check_account_options(options),
    _known,
)


def check_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with a Slurm cluster's options, as sentences (empty when valid): CHECKS."""
    return problems(CHECKS, options)


SPEC_CHECKS: tuple[SpecCheck, ...] = (
    Refuse(
        "image",
        lambda spec, _: spec.image,
        "Cluster {cluster} runs batch scripts; container images are not supported.",
    ),
    SCRIPT_OR_COMMAND,
    Refuse(
        "script",
        lambda spec, _: not spec.script.strip() and not spec.command,
        "Cluster {cluster} needs a script to run.",
    ),
    Refuse(
        "cluster",
        lambda spec, _: (
            spec.cluster_user
            and (spec.cluster_user in FORBIDDEN_USERS or not USER_RE.match(spec.cluster_user))
        ),
        "Jobs never run as '{spec.cluster_user}' on cluster {cluster}.",
    ),
    Refuse(
        "name",
        lambda spec, _: not NAME_RE.match(spec.name or ""),
        "On Slurm clusters a job name is at most 64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit.",
    ),
    Refuse(
        "partition",
        lambda spec, _: spec.partition and not NAME_RE.match(spec.partition),
        "partition must be a Slurm partition name.",
    ),
    AT_LEAST_ONE_CPU,
    Refuse(
        "memory_mb",
        lambda spec, _: spec.memory_mb < 1,
        "A job needs some memory (memory_mb at least 1).",
    ),
    AT_LEAST_ONE_MINUTE,
    Refuse(
        "gpu_type",
        lambda spec, _: spec.gpus and spec.gpu_type and not GRES_RE.match(spec.gpu_type),
        "gpu_type must be a GRES type name.",
    ),
)


def validate_spec(spec: JobSpec, options: Mapping[str, Any], cluster: str) -> list[tuple[str, str]]:
    """(field, message) for everything in `spec` this cluster would refuse: SPEC_CHECKS."""
    return refusals(SPEC_CHECKS, spec, options, cluster)


def _accounts_version(value: Any) -> bool:
    from jobs.backends.slurm.accounts import VERSIONS

    return value in VERSIONS


ACCOUNT_CHECKS: tuple[Check, ...] = (
    Option(
        "slurm_cluster",
        _matches(NAME_RE),
        "slurm_cluster must be the ClusterName of slurm.conf (manage_accounts).",
        When.ALWAYS,
    ),
    Option(
        "account",
        bool,
        "account (the parent Slurm account of project accounts, e.g. gpucommons) is "
        "required with manage_accounts.",
        When.ALWAYS,
    ),
    Option(
        "operator_user",
        _matches(USER_RE),
        "operator_user must be a Slurm user with operator rights in slurmdbd (the SlurmUser).",
        When.ALWAYS,
        "slurm",
    ),
    Option(
        "gpu_tres",
        _matches(GPU_TRES_RE),
        "gpu_tres must be a GRES name such as gpu.",
        When.ALWAYS,
        "gpu",
    ),
    Option(
        "billing_per_su",
        lambda v: is_positive_number(v) and v <= 1e6,
        "billing_per_su must be a positive number (billing TRES minutes per SU).",
        When.ALWAYS,
        1,
    ),
    Option(
        "new_accounts_per_tick",
        whole_in(1, 1000),
        "new_accounts_per_tick must be a whole number from 1 to 1000.",
        When.ALWAYS,
        50,
    ),
    Option(
        "pushes_per_tick",
        whole_in(1, 100_000),
        "pushes_per_tick must be a whole number from 1 to 100000.",
        When.ALWAYS,
        200,
    ),
    Option(
        "account_prefix",
        _matches(ACCOUNT_PREFIX_RE),
        "account_prefix must be 1-16 lower-case letters, digits, '_' or '-', starting "
        "with a letter (project accounts are named <prefix><project id>).",
        When.ALWAYS,
        "gpuc",
    ),
    Option(
        "api_version",
        _accounts_version,
        "manage_accounts needs an api_version listed in slurm/accounts.py.",
        When.ALWAYS,
        "v0.0.38",
    ),
)


def _check_account_options(options: Mapping[str, Any]) -> list[str]:
    """Options of clusters whose project accounts the portal manages (manage_accounts)."""
    manage = options.get("manage_accounts", False)
    if not isinstance(manage, bool):
        return ["manage_accounts must be true (the portal manages project accounts) or false."]
    return problems(ACCOUNT_CHECKS, options) if manage else []
