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
from jobs.drafts import FIELDS, JobDraft
from jobs.exceptions import ClusterNotUsable, InvalidJob, NoClusterAccount
from jobs.models import ClusterAccount
from quotas.models import Allocation, Cluster

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The portal's own variables ($GPUC_JOB_DIR, $GPUC_PROJECT_DIR, a session's $GPUC_SESSION_*):
# a job may not set or override them (case-sensitive, as environment names are).
RESERVED_ENV_PREFIX = "GPUC_"
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


@dataclass(frozen=True, kw_only=True)
class JobRequest(JobDraft):
    """A checked, normalised draft for one project and cluster (what job_submit stores and
    estimates): every field has its type, the cluster's limits hold, defaults are filled in."""

    project: Project
    cluster: Cluster
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    array_size: int = 1


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


@dataclass(frozen=True)
class SubmitAccess:
    """What check_submit_access decides on: whether the user is a member of the project and
    the project has an allocation on the cluster, and the user's account there (None: none).
    Read by read_submit_access, or with the project and cluster themselves in one statement
    (jobs.selectors.resolve_submit_target)."""

    member: bool
    allocated: bool
    account_id: int | None
    username: str  # "" without an account
    uid: int | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SubmitAccess:
        """From the five columns of submit_access_sql."""
        member, allocated, account_id, username, uid = row
        return cls(bool(member), bool(allocated), account_id, username or "", uid)


def submit_access_sql(*, project_id: str, cluster_id: str) -> tuple[str, str]:
    """What check_submit_access decides on, as SQL to put in a statement where `project_id`
    and `cluster_id` are expressions: five select-list columns (membership, an allocation of
    the project on the cluster, the user's account there: SubmitAccess.from_row reads them) and
    the LEFT JOIN of that account. Each takes the user's id as its one parameter, placed where
    it stands in the statement (the columns' in the select list, the join's in FROM). Plain
    SQL: this runs on every submission, and the ORM's compilation of these subqueries cost
    more than running them."""
    member_t, alloc_t, link_t, account_t = (
        ProjectMember._meta.db_table,
        Allocation._meta.db_table,
        Allocation.clusters.through._meta.db_table,
        ClusterAccount._meta.db_table,
    )
    columns = f"""
        EXISTS(SELECT 1 FROM {member_t} m
               WHERE m.project_id = {project_id} AND m.user_id = %s),
        EXISTS(SELECT 1 FROM {alloc_t} a JOIN {link_t} l ON l.allocation_id = a.id
               WHERE a.project_id = {project_id} AND l.cluster_id = {cluster_id}),
        acc.id, acc.username, acc.uid"""  # noqa: S608 (names from the models and the caller)
    join = f"""
        LEFT JOIN {account_t} acc ON acc.user_id = %s AND acc.cluster_id = {cluster_id}"""
    return columns, join


def read_submit_access(*, user: User, project: Project, cluster: Cluster) -> SubmitAccess:
    """Membership, allocation and the cluster account in ONE query."""
    columns, join = submit_access_sql(project_id="t.project_id", cluster_id="t.cluster_id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM (SELECT CAST(%s AS BIGINT) AS project_id, "  # noqa: S608
            f"CAST(%s AS BIGINT) AS cluster_id) t {join}",
            [user.pk, project.pk, cluster.pk, user.pk],  # in the order they stand
        )
        return SubmitAccess.from_row(cursor.fetchone())


def check_submit_access(
    *, user: User, project: Project, cluster: Cluster, access: SubmitAccess | None = None
) -> ClusterAccount:
    """check_cluster_usable then check_cluster_account (same checks, same order, same errors)
    on what read_submit_access reads, or on `access` when the caller read it already."""
    known = access or read_submit_access(user=user, project=project, cluster=cluster)
    _check_usable(project, cluster, member=lambda: known.member, allocated=lambda: known.allocated)
    account = None
    if known.account_id is not None:
        account = ClusterAccount(
            pk=known.account_id, user=user, cluster=cluster, username=known.username,
            uid=known.uid,
        )  # fmt: skip
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


# --- the draft's rules: one per field, applied in this order (the first failure is the answer)

Rule = Callable[[str, Any, "_Checking"], Any]


@dataclass
class _Checking:
    """A draft under check: its cluster, the chosen partition's limits once known, and the
    values so far (each rule returns its field's normalised value)."""

    cluster: Cluster
    values: dict[str, Any]
    part: Mapping[str, Any] = field(default_factory=dict)

    def limit(self, key: str) -> int:
        return _limit(self.cluster, self.part, key)


def _name(name: str, value: Any, checking: _Checking) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidJob(
            "name must start with a letter or digit and contain only letters, digits, "
            "'.', '_' or '-' (at most 128 characters)",
            field=name,
        )
    return value


def _text(name: str, value: Any, checking: _Checking) -> str:
    if not isinstance(value, str):
        raise InvalidJob(f"{name} must be text", field=name)
    return value


def _image(name: str, value: Any, checking: _Checking) -> str:
    if not isinstance(value, str) or len(value) > MAX_IMAGE_LEN or "\x00" in value:
        raise InvalidJob(f"image must be at most {MAX_IMAGE_LEN} characters", field=name)
    return value


def _command(name: str, value: Any, checking: _Checking) -> tuple[str, ...]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) > MAX_COMMAND_ARGS
        or not all(isinstance(a, str) and "\x00" not in a for a in value)
    ):
        raise InvalidJob("command must be a list of strings", field=name)
    return tuple(value)


def _script(name: str, value: str, checking: _Checking) -> str:
    if not value.strip() and not checking.values["image"]:
        raise InvalidJob("script must not be empty", field=name)
    max_bytes = settings.GPUC_MAX_SCRIPT_BYTES
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidJob(f"script must be at most {max_bytes} bytes", field=name)
    if "\x00" in value:
        raise InvalidJob("script must not contain NUL bytes", field=name)
    return value


def _partition(name: str, value: Any, checking: _Checking) -> str:
    if not isinstance(value, str):
        raise InvalidJob("partition must be a name", field=name)
    chosen, checking.part = _partition_options(checking.cluster, value)
    return chosen


def _count(limit: str, *, minimum: int) -> Rule:
    """A whole number from `minimum` to the partition's (or cluster's) `limit`."""

    def rule(name: str, value: Any, checking: _Checking) -> int:
        return _int(value, name, minimum=minimum, maximum=checking.limit(limit))

    return rule


def _gpu_type(name: str, value: Any, checking: _Checking) -> str:
    if not isinstance(value, str):
        raise InvalidJob("gpu_type must be a name", field=name)
    known = checking.cluster.gpu_types
    if value and value not in known:
        raise InvalidJob(
            f"Unknown GPU type '{value}' on cluster {checking.cluster.name} "
            f"(known: {', '.join(known) or 'none'})",
            field=name,
        )
    if checking.values["gpus"] == 0:
        return ""
    return value or (known[0] if known else "")


def _array(name: str, value: object, checking: _Checking) -> str:
    """Also sets array_size (1 without an array)."""
    if not isinstance(value, str):
        raise InvalidJob("array must be a specification like '0-99%10'", field=name)
    value = value.strip()
    if value:
        try:
            spec = parse_array(value, max_tasks=checking.limit("max_array_tasks"))
        except ValueError as exc:
            raise InvalidJob(f"array: {exc}", field=name) from None
        checking.values["array_size"] = spec.size
    return value


def _env(name: str, value: Any, checking: _Checking) -> dict[str, str]:
    env = {} if value is None else value
    if not isinstance(env, Mapping):
        raise InvalidJob("env must be an object of NAME: value strings", field=name)
    if len(env) > MAX_ENV_VARS:
        raise InvalidJob(f"env may hold at most {MAX_ENV_VARS} variables", field=name)
    for key, item in env.items():
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            raise InvalidJob(
                f"env name {key!r} is not an identifier (letters, digits and '_', "
                "not starting with a digit)",
                field=name,
            )
        if key.startswith(RESERVED_ENV_PREFIX):
            raise InvalidJob(
                f"env name {key} is reserved: names starting with {RESERVED_ENV_PREFIX} "
                "are set by the portal",
                field=name,
            )
        if not isinstance(item, str) or "\x00" in item:
            raise InvalidJob(f"env value of {key} must be a string", field=name)
    total = sum(len(k) + len(v.encode("utf-8", "surrogatepass")) for k, v in env.items())
    if total > MAX_ENV_BYTES:
        raise InvalidJob(f"env must be at most {MAX_ENV_BYTES} bytes in all", field=name)
    return dict(env)


# A field may have more than one rule: the script's type is checked before the image and the
# command, its content after them (an empty script is fine when an image runs).
RULES: tuple[tuple[str, Rule], ...] = (
    ("name", _name),
    ("script", _text),
    ("image", _image),
    ("command", _command),
    ("script", _script),
    ("partition", _partition),
    ("gpus", _count("max_gpus", minimum=0)),
    ("cpus", _count("max_cpus", minimum=1)),
    ("memory_mb", _count("max_memory_mb", minimum=1)),
    ("time_limit_minutes", _count("max_time_minutes", minimum=1)),
    ("gpu_type", _gpu_type),
    ("array", _array),
    ("env", _env),
)


def validate_job(*, project: Project, cluster: Cluster, draft: JobDraft) -> JobRequest:
    """Normalise and check every field of `draft` on `cluster` (RULES, in order); raises
    InvalidJob naming the first bad field."""
    values = {name: getattr(draft, name) for name in FIELDS}
    checking = _Checking(cluster=cluster, values={**values, "array_size": 1})
    for name, rule in RULES:
        checking.values[name] = rule(name, checking.values[name], checking)
    return JobRequest(project=project, cluster=cluster, **checking.values)
