"""Checks a job request against the house rules and the target cluster's options.

Cluster options read here (all optional):
    gpu_types          ["h100", "a100"]; the first is the default when gpus > 0 and none is given
    partitions         ["gpu", "debug"] or {"gpu": {"max_gpus": 8, ...}, ...}
    default_partition  defaults to the first partition
    max_gpus, max_cpus, max_memory_mb, max_time_minutes, max_array_tasks   (per partition too)
    allowed_projects   project slugs allowed to use the cluster (default: any with an allocation)
    allowed_organizations   organization slugs allowed (read by Cluster.is_open_to only)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from accounts.models import Project, ProjectMember, User
from jobs.arrays import parse_array
from jobs.exceptions import ClusterNotUsable, InvalidJob, NoClusterAccount
from jobs.models import ClusterAccount
from quotas.models import Allocation, Cluster

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CLUSTER_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MAX_ENV_VARS = 256
MAX_ENV_BYTES = 64 * 1024
MAX_IMAGE_LEN = 255
MAX_COMMAND_ARGS = 256

# Hard ceilings whatever a cluster's options say: anything above is a typo or an attack.
ABSOLUTE = {
    "max_gpus": 4096,
    "max_cpus": 65536,
    "max_memory_mb": 64 * 1024 * 1024,
    "max_time_minutes": 366 * 24 * 60,
    "max_array_tasks": 100_000,
}
DEFAULTS = {
    "max_gpus": 64,
    "max_cpus": 1024,
    "max_memory_mb": 4 * 1024 * 1024,
    "max_time_minutes": 14 * 24 * 60,
    "max_array_tasks": 10_000,
}
SYSTEM_USERS = frozenset(
    [
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "_apt",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "messagebus",
        "sshd",
        "slurm",
        "munge",
        "postgres",
        "mysql",
        "redis",
        "admin",
        "operator",
        "halt",
        "shutdown",
    ]
)


@dataclass(frozen=True)
class JobRequest:
    """A validated, normalised submission (what job_submit stores and estimates)."""

    project: Project
    cluster: Cluster
    name: str
    script: str = ""
    image: str = ""
    command: tuple[str, ...] = ()
    partition: str = ""
    gpus: int = 0
    gpu_type: str = ""
    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60
    array: str = ""
    array_size: int = 1
    env: dict[str, str] = field(default_factory=dict)


def _int(value: Any, name: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            raise InvalidJob(f"{name} must be a whole number", field=name)
    if value < minimum:
        raise InvalidJob(f"{name} must be at least {minimum}", field=name)
    if value > maximum:
        raise InvalidJob(f"{name} must be at most {maximum} on this cluster", field=name)
    return int(value)


def _partition_options(cluster: Cluster, partition: str) -> tuple[str, Mapping[str, Any]]:
    partitions = cluster.options.get("partitions") or []
    if not partitions:
        if partition:
            raise InvalidJob(
                f"Cluster {cluster.name} has no partitions; leave partition empty",
                field="partition",
            )
        return "", {}
    names = list(partitions)
    chosen = partition or cluster.options.get("default_partition") or names[0]
    if chosen not in names:
        raise InvalidJob(
            f"Unknown partition '{chosen}' on cluster {cluster.name} (known: {', '.join(names)})",
            field="partition",
        )
    limits = partitions[chosen] if isinstance(partitions, Mapping) else {}
    return chosen, limits or {}


def _limit(cluster: Cluster, part: Mapping[str, Any], key: str) -> int:
    value = part.get(key, cluster.options.get(key, DEFAULTS[key]))
    try:
        return min(int(value), ABSOLUTE[key])
    except (TypeError, ValueError):
        return DEFAULTS[key]


def check_cluster_usable(*, user: User, project: Project, cluster: Cluster) -> None:
    """The user belongs to the project, and the project may use the enabled cluster."""
    _check_usable(
        project,
        cluster,
        member=ProjectMember.objects.filter(project=project, user=user).exists,
        allocated=Allocation.objects.filter(project=project, clusters=cluster).exists,
    )


def _check_usable(
    project: Project,
    cluster: Cluster,
    *,
    member: Callable[[], bool],
    allocated: Callable[[], bool],
) -> None:
    if not member():
        raise InvalidJob("You are not a member of this project", field="project")
    if not project.is_active:
        raise InvalidJob(f"Project {project.name} is not active", field="project")
    if not cluster.enabled:
        raise ClusterNotUsable(f"Cluster {cluster.name} is disabled", field="cluster")
    if not cluster.is_open_to(project.organization.slug):
        raise ClusterNotUsable(
            f"Organization of project {project.name} may not use cluster {cluster.name}",
            field="cluster",
        )
    allowed = cluster.options.get("allowed_projects")
    if allowed is not None and project.slug not in allowed:
        raise ClusterNotUsable(
            f"Project {project.name} may not use cluster {cluster.name}", field="cluster"
        )
    if not allocated():
        raise ClusterNotUsable(
            f"Project {project.name} has no allocation on cluster {cluster.name}",
            field="cluster",
        )


def check_submit_access(*, user: User, project: Project, cluster: Cluster) -> ClusterAccount:
    """check_cluster_usable then check_cluster_account (same checks, same order, same errors)
    in ONE query: membership, allocation and the cluster account are read together."""
    # Plain SQL: this runs on every submission and the ORM's compilation of three subqueries
    # cost more than the query itself.
    member_t, alloc_t, link_t, account_t = (
        ProjectMember._meta.db_table,
        Allocation._meta.db_table,
        Allocation.clusters.through._meta.db_table,
        ClusterAccount._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT
                EXISTS(SELECT 1 FROM {member_t} WHERE project_id = %s AND user_id = %s),
                EXISTS(SELECT 1 FROM {alloc_t} a JOIN {link_t} l ON l.allocation_id = a.id
                       WHERE a.project_id = %s AND l.cluster_id = %s),
                a.id, a.username, a.uid
            FROM (SELECT 1) one
            LEFT JOIN {account_t} a ON a.user_id = %s AND a.cluster_id = %s""",  # noqa: S608
            [project.pk, user.pk, project.pk, cluster.pk, user.pk, cluster.pk],
        )
        member, allocated, account_id, username, uid = cursor.fetchone()
    _check_usable(project, cluster, member=lambda: bool(member), allocated=lambda: bool(allocated))
    account = None
    if account_id is not None:
        account = ClusterAccount(
            pk=account_id, user=user, cluster=cluster, username=username, uid=uid
        )
    return _check_account(account, cluster)


def check_cluster_account(*, user: User, cluster: Cluster) -> ClusterAccount:
    """The cluster account the user's jobs run as: never root or a system account."""
    return _check_account(
        ClusterAccount.objects.filter(user=user, cluster=cluster).first(), cluster
    )


def _check_account(account: ClusterAccount | None, cluster: Cluster) -> ClusterAccount:
    if account is None:
        raise NoClusterAccount(
            f"You have no account on cluster {cluster.name} yet: request access on the Cluster "
            "access page (/access/) or with POST /api/v1/cluster-access-requests/",
            field="cluster",
            cluster_name=cluster.name,
        )
    if account.username in SYSTEM_USERS or not CLUSTER_USER_RE.match(account.username):
        raise ClusterNotUsable(
            f"Cluster account '{account.username}' is a system account; jobs never run as one",
            field="cluster",
        )
    if account.uid is not None and account.uid < 1000:
        raise ClusterNotUsable(
            f"Cluster account '{account.username}' has uid {account.uid} (< 1000)",
            field="cluster",
        )
    return account


def validate_cluster_username(username: str, uid: int | None) -> None:
    if not CLUSTER_USER_RE.match(username or ""):
        raise InvalidJob(
            "A cluster user name is 1-32 lower-case letters, digits, '_' or '-'", field="username"
        )
    if username in SYSTEM_USERS:
        raise InvalidJob(f"'{username}' is a system account", field="username")
    if uid is not None and uid < 1000:
        raise InvalidJob("uid must be at least 1000 (no system accounts)", field="uid")


def validate_job(
    *,
    project: Project,
    cluster: Cluster,
    name: Any,
    script: Any = "",
    image: Any = "",
    command: Any = (),
    partition: Any = "",
    gpus: Any = 0,
    gpu_type: Any = "",
    cpus: Any = 1,
    memory_mb: Any = 1024,
    time_limit_minutes: Any = 60,
    array: Any = "",
    env: Any = None,
) -> JobRequest:
    """Normalise and check every field; raises InvalidJob naming the first bad field."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidJob(
            "name must start with a letter or digit and contain only letters, digits, "
            "'.', '_' or '-' (at most 128 characters)",
            field="name",
        )
    if not isinstance(script, str):
        raise InvalidJob("script must be text", field="script")
    if not isinstance(image, str) or len(image) > MAX_IMAGE_LEN or "\x00" in image:
        raise InvalidJob(f"image must be at most {MAX_IMAGE_LEN} characters", field="image")
    if not isinstance(command, Sequence) or isinstance(command, str):
        raise InvalidJob("command must be a list of strings", field="command")
    if len(command) > MAX_COMMAND_ARGS or not all(
        isinstance(a, str) and "\x00" not in a for a in command
    ):
        raise InvalidJob("command must be a list of strings", field="command")
    if not script.strip() and not image:
        raise InvalidJob("script must not be empty", field="script")
    max_bytes = settings.GPUC_MAX_SCRIPT_BYTES
    if len(script.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidJob(f"script must be at most {max_bytes} bytes", field="script")
    if "\x00" in script:
        raise InvalidJob("script must not contain NUL bytes", field="script")
    if not isinstance(partition, str):
        raise InvalidJob("partition must be a name", field="partition")
    partition, part = _partition_options(cluster, partition)

    gpus = _int(gpus, "gpus", minimum=0, maximum=_limit(cluster, part, "max_gpus"))
    cpus = _int(cpus, "cpus", minimum=1, maximum=_limit(cluster, part, "max_cpus"))
    memory_mb = _int(
        memory_mb, "memory_mb", minimum=1, maximum=_limit(cluster, part, "max_memory_mb")
    )
    time_limit_minutes = _int(
        time_limit_minutes,
        "time_limit_minutes",
        minimum=1,
        maximum=_limit(cluster, part, "max_time_minutes"),
    )

    if not isinstance(gpu_type, str):
        raise InvalidJob("gpu_type must be a name", field="gpu_type")
    known_types = cluster.gpu_types
    if gpu_type and gpu_type not in known_types:
        known = ", ".join(known_types) or "none"
        raise InvalidJob(
            f"Unknown GPU type '{gpu_type}' on cluster {cluster.name} (known: {known})",
            field="gpu_type",
        )
    if gpus > 0 and not gpu_type and known_types:
        gpu_type = known_types[0]
    if gpus == 0:
        gpu_type = ""

    if not isinstance(array, str):
        raise InvalidJob("array must be a specification like '0-99%10'", field="array")
    array = array.strip()
    array_size = 1
    if array:
        try:
            spec = parse_array(array, max_tasks=_limit(cluster, part, "max_array_tasks"))
        except ValueError as exc:
            raise InvalidJob(f"array: {exc}", field="array") from None
        array_size = spec.size

    env = {} if env is None else env
    if not isinstance(env, Mapping):
        raise InvalidJob("env must be an object of NAME: value strings", field="env")
    if len(env) > MAX_ENV_VARS:
        raise InvalidJob(f"env may hold at most {MAX_ENV_VARS} variables", field="env")
    clean_env: dict[str, str] = {}
    total = 0
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            raise InvalidJob(
                f"env name {key!r} is not an identifier (letters, digits and '_', "
                "not starting with a digit)",
                field="env",
            )
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidJob(f"env value of {key} must be a string", field="env")
        total += len(key) + len(value.encode("utf-8", "surrogatepass"))
        clean_env[key] = value
    if total > MAX_ENV_BYTES:
        raise InvalidJob(f"env must be at most {MAX_ENV_BYTES} bytes in all", field="env")

    return JobRequest(
        project=project,
        cluster=cluster,
        name=name,
        script=script,
        image=image,
        command=tuple(command),
        partition=partition,
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=cpus,
        memory_mb=memory_mb,
        time_limit_minutes=time_limit_minutes,
        array=array,
        array_size=array_size,
        env=clean_env,
    )
