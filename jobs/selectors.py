"""Reads served to users, always scoped to the caller: a job of another tenant does not exist."""

from __future__ import annotations

import functools
import uuid as uuid_lib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, NamedTuple, TypeVar

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from accounts.models import Membership, Organization, Project, ProjectMember, User
from accounts.roles import ORG_MANAGER_ROLES
from jobs.exceptions import AccessRequestNotFound, InvalidJob, JobNotFound
from jobs.models import (
    ClusterAccessRequest,
    ClusterAccount,
    Job,
    JobEvent,
    JobTemplate,
    Session,
    SessionApp,
)
from jobs.validation import SubmitAccess, submit_access_sql
from quotas.models import Cluster
from quotas.policy import is_facility_admin
from quotas.services.rates import Usage, cached_rates_at, cost_of

M = TypeVar("M", bound=Model)
T = TypeVar("T")

LIST_FIELDS = (
    "id",
    "uuid",
    "name",
    "state",
    "gpus",
    "gpu_type",
    "cpus",
    "memory_mb",
    "time_limit_minutes",
    "array",
    "array_size",
    "created_at",
    "started_at",
    "ended_at",
    "exit_code",
    "estimated_cost",
    "charged_cost",
    "backend_id",
    "origin",
    "cluster_username",
    "project__uuid",
    "project__name",
    "project__slug",
    "cluster__name",
    "user__username",
)


def project_ids_for_user(user: User) -> QuerySet[ProjectMember, Any]:
    """The ids of the projects the user belongs to, as a subquery."""
    return ProjectMember.objects.filter(user=user).values("project_id")


def projects_for_user(*, user: User) -> QuerySet[Project]:
    return Project.objects.filter(memberships__user=user, is_active=True).select_related(
        "organization"
    )


def job_visible_to(*, user: User) -> QuerySet[Job]:
    """Jobs of the projects the user belongs to."""
    if not user.is_authenticated:
        return Job.objects.none()
    return Job.objects.filter(project_id__in=project_ids_for_user(user))


def job_list_project_ids(
    *,
    user: User,
    project_uuid: uuid_lib.UUID | None = None,
    project_slug: str | None = None,
) -> QuerySet[Project, Any]:
    """The ids of the caller's projects (only the one named, when one is), as `values("pk")`."""
    projects = Project.objects.filter(memberships__user=user)
    if project_uuid is not None:
        projects = projects.filter(uuid=project_uuid)
    elif project_slug is not None:
        projects = projects.filter(slug=project_slug)
    return projects.values("pk")


def job_list_project_ids_of(
    *,
    user_id: int,
    project_uuid: uuid_lib.UUID | None = None,
    project_slug: str | None = None,
) -> QuerySet[Project, Any]:
    """job_list_project_ids for the user with this id."""
    return job_list_project_ids(
        user=User(pk=user_id), project_uuid=project_uuid, project_slug=project_slug
    )


def job_list_cluster_ids(*, name: str) -> QuerySet[Cluster, Any]:
    return Cluster.objects.filter(name=name).values("pk")


def job_list_of_projects(
    *,
    project_ids: list[int],
    state: str | None = None,
    cluster_ids: list[int] | None = None,
    origin: str | None = None,
    name: str | None = None,
    id_range: tuple[uuid_lib.UUID, uuid_lib.UUID] | None = None,
) -> QuerySet[Job]:
    """The jobs of these projects (already resolved for the caller), filtered."""
    # `project_id IN (<constants>)` lets PostgreSQL walk the (project, -created_at, -id) index
    # and stop after one page; `IN (<subquery>)` makes it sort every visible job (100 ms at
    # 100,000 jobs) for each page.
    qs = Job.objects.filter(project_id__in=project_ids)
    if state:
        qs = qs.filter(state=state)
    if cluster_ids is not None:
        qs = qs.filter(cluster_id__in=cluster_ids)
    if origin:
        qs = qs.filter(origin=origin)
    if name:
        qs = qs.filter(name__icontains=name)
    if id_range:
        qs = qs.filter(uuid__range=id_range)
    return qs.select_related("project", "cluster", "user").only(*LIST_FIELDS)


def split_project_ref(project: str | None) -> dict[str, Any]:
    """A project named by uuid or slug, as the keyword job_list_project_ids takes."""
    if not project:
        return {}
    try:
        return {"project_uuid": uuid_lib.UUID(project)}
    except ValueError:
        return {"project_slug": project}


def job_list_for_user(
    *,
    user: User,
    project: str | None = None,
    state: str | None = None,
    cluster: str | None = None,
    origin: str | None = None,
    name: str | None = None,
    id_range: tuple[uuid_lib.UUID, uuid_lib.UUID] | None = None,
) -> QuerySet[Job]:
    """The caller's visible jobs, newest first, filtered by project (uuid or slug), state,
    cluster (name), origin (portal, direct), name (a case-insensitive part of it) and uuid
    range (a short id's, from `portal.ids.uuid_prefix_range`); light enough for keyset pages
    over 100,000 rows."""
    if not user.is_authenticated:
        return Job.objects.none()
    # Resolve the projects (and the cluster) to ids first: see job_list_of_projects.
    ids = job_list_project_ids(user=user, **split_project_ref(project))
    cluster_ids = None
    if cluster:
        cluster_ids = [row["pk"] for row in job_list_cluster_ids(name=cluster)]
    return job_list_of_projects(
        project_ids=[row["pk"] for row in ids],
        state=state,
        cluster_ids=cluster_ids,
        origin=origin,
        name=name,
        id_range=id_range,
    )


def job_get_for_user(*, user: User, job_uuid: uuid_lib.UUID | str) -> Job:
    """One visible job (with its project, cluster and hold), or JobNotFound."""
    try:
        key = job_uuid if isinstance(job_uuid, uuid_lib.UUID) else uuid_lib.UUID(str(job_uuid))
    except ValueError:
        raise JobNotFound("No such job") from None
    job = (
        job_visible_to(user=user)
        .select_related("project", "project__organization", "cluster", "user", "hold")
        .filter(uuid=key)
        .first()
    )
    if job is None:
        raise JobNotFound("No such job")
    return job


def job_events(*, job: Job) -> QuerySet[JobEvent]:
    return JobEvent.objects.filter(job=job).select_related("actor").order_by("created_at", "id")


def job_templates_for_user(*, user: User) -> QuerySet[JobTemplate]:
    """Global templates and those of the user's projects."""
    return JobTemplate.objects.filter(
        Q(project__isnull=True) | Q(project_id__in=project_ids_for_user(user))
    ).select_related("project", "cluster")


def clusters_for_user(*, user: User) -> QuerySet[Cluster]:
    """Enabled clusters on which one of the user's projects has an allocation."""
    return (
        Cluster.objects.filter(
            enabled=True,
            allocations__project_id__in=project_ids_for_user(user),
        )
        .distinct()
        .order_by("name")
    )


def cluster_account_for(*, user: User, cluster: Cluster) -> ClusterAccount | None:
    return ClusterAccount.objects.filter(user=user, cluster=cluster).first()


def access_requests_for_user(*, user: User) -> QuerySet[ClusterAccessRequest]:
    """The caller's own access requests; facility admins see everyone's."""
    requests = ClusterAccessRequest.objects.select_related(
        "user", "project__organization", "cluster", "decided_by", "account"
    )
    if is_facility_admin(user):
        return requests
    return requests.filter(user=user)


def access_request_get_for_user(
    *, user: User, request_uuid: uuid_lib.UUID | str
) -> ClusterAccessRequest:
    """One visible access request; anyone else's (or an unknown id) is a 404."""
    try:
        return access_requests_for_user(user=user).get(uuid=request_uuid)
    except (ClusterAccessRequest.DoesNotExist, ValueError, ValidationError):
        raise AccessRequestNotFound("No such access request") from None


def access_requests_pending() -> QuerySet[ClusterAccessRequest]:
    """The staff queue: pending requests, oldest first."""
    return (
        ClusterAccessRequest.objects.filter(state=ClusterAccessRequest.State.PENDING)
        .select_related("user", "project__organization", "cluster")
        .order_by("created_at", "id")
    )


def access_requests_recent_outcomes(*, limit: int = 50) -> QuerySet[ClusterAccessRequest]:
    """For the staff page: requests being provisioned, and recent failures, newest first."""
    State = ClusterAccessRequest.State
    return (
        ClusterAccessRequest.objects.filter(
            state__in=[State.APPROVED, State.PROVISIONING, State.FAILED]
        )
        .select_related("user", "project__organization", "cluster", "decided_by")
        .order_by("-updated_at", "-id")[:limit]
    )


def _projects_named(user: User, value: str) -> list[Project]:
    """Up to two of the caller's projects whose uuid or slug is `value` (slugs are unique per
    organization only, so two means ambiguous)."""
    projects = projects_for_user(user=user)
    try:
        return list(projects.filter(uuid=uuid_lib.UUID(str(value))))
    except ValueError:
        return list(projects.filter(slug=value)[:2])


def project_for_member(*, user: User, value: str) -> Project:
    """One of the caller's projects by uuid or slug; anyone else's is a 404."""
    matches = _projects_named(user, value)
    if len(matches) != 1:
        raise AccessRequestNotFound(f"No such project: {value}")
    return matches[0]


def resolve_project(user: User, value: str) -> Project:
    """One of the caller's projects by uuid or slug, for a job or template request; 400 naming
    `project` otherwise."""
    return _the_one(_projects_named(user, value), value)


def _the_one(matches: Sequence[T], value: str) -> T:
    """The project that `value` names, or the 400 naming `project`."""
    if len(matches) != 1:
        raise InvalidJob(
            f"Unknown project '{value}'" if not matches else f"Project slug '{value}' is ambiguous",
            field="project",
        )
    return matches[0]


def resolve_cluster(value: str) -> Cluster:
    """A cluster by name or uuid, for a job or template request; 400 naming `cluster`
    otherwise."""
    try:
        query = Q(uuid=uuid_lib.UUID(str(value)))
    except ValueError:
        query = Q(name=value)
    cluster = Cluster.objects.filter(query).first()
    if cluster is None:
        raise InvalidJob(f"Unknown cluster '{value}'", field="cluster")
    return cluster


def resolve_target(user: User, project: str, cluster: str) -> tuple[Project, Cluster]:
    """resolve_project and resolve_cluster in ONE statement (the submit path reads it on every
    request): the same project (with its organization) and cluster, the same 400s in the same
    order. Plain SQL on PostgreSQL: compiling the two querysets cost more CPU than running
    them (elsewhere, as the SQLite development default, the two resolvers)."""
    if not user.is_authenticated or connection.vendor != "postgresql":
        return resolve_project(user, project), resolve_cluster(cluster)
    target, cluster_obj, _ = _resolve(user, project, cluster, with_access=False)
    return target, cluster_obj


class SubmitTarget(NamedTuple):
    project: Project
    cluster: Cluster
    access: SubmitAccess | None  # None: job_submit reads it (off PostgreSQL)


def resolve_submit_target(user: User, project: str, cluster: str) -> SubmitTarget:
    """resolve_target and, in the same statement, what check_submit_access decides on (the
    user's membership, the project's allocation on the cluster, the user's cluster account):
    a submission reads who and where in one round trip."""
    if not user.is_authenticated or connection.vendor != "postgresql":
        return SubmitTarget(*resolve_target(user, project, cluster), None)
    return SubmitTarget(*_resolve(user, project, cluster, with_access=True))


def _resolve(
    user: User, project: str, cluster: str, *, with_access: bool
) -> tuple[Project, Cluster, SubmitAccess | None]:
    p_by, p_value = _uuid_or(project, "slug")
    c_by, c_value = _uuid_or(cluster, "name")
    sql = _resolve_sql(p_by, c_by, with_access)
    params: list[Any] = [p_value, user.pk, user.pk, list(ORG_MANAGER_ROLES), c_value]
    if with_access:
        params += [user.pk, user.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    row = _the_one([row for row in rows if row[0] is not None], project)
    projects, orgs, clusters = _row_of(Project), _row_of(Organization), _row_of(Cluster)
    n_p, n_o, n_c = len(projects.fields), len(orgs.fields), len(clusters.fields)
    if row[n_p + n_o] is None:
        raise InvalidJob(f"Unknown cluster '{cluster}'", field="cluster")
    target = projects.instance(row[:n_p])
    target.organization = orgs.instance(row[n_p : n_p + n_o])
    found = clusters.instance(row[n_p + n_o : n_p + n_o + n_c])
    access = SubmitAccess.from_row(row[n_p + n_o + n_c :]) if with_access else None
    return target, found, access


@functools.cache
def _resolve_sql(p_by: str, c_by: str, with_access: bool) -> str:
    """_resolve's statement for a project named by `p_by` and a cluster by `c_by` (composed
    once per process): the project's, its organization's and the cluster's columns, then, with
    `with_access`, validation.read_submit_access's."""
    columns = ", ".join(
        [f'p."{f.column}"' for f in Project._meta.concrete_fields]
        + [f'o."{f.column}"' for f in Organization._meta.concrete_fields]
        + [f'c."{f.column}"' for f in Cluster._meta.concrete_fields]
    )
    access_columns = account_join = ""
    if with_access:
        access_columns, account_join = submit_access_sql(project_id="p.id", cluster_id="c.id")
        access_columns = "," + access_columns
    return f"""
        WITH p AS (
            SELECT p.* FROM {Project._meta.db_table} p
            WHERE p."{p_by}" = %s
              AND (p.id IN (SELECT project_id FROM {ProjectMember._meta.db_table}
                            WHERE user_id = %s)
                   OR p.organization_id IN (SELECT organization_id
                                            FROM {Membership._meta.db_table}
                                            WHERE user_id = %s AND role = ANY(%s)))
            LIMIT 2
        ), c AS (
            SELECT * FROM {Cluster._meta.db_table} WHERE "{c_by}" = %s ORDER BY id LIMIT 1
        )
        SELECT {columns}{access_columns}
        FROM (SELECT 1) one
        LEFT JOIN p ON true
        LEFT JOIN {Organization._meta.db_table} o ON o.id = p.organization_id
        LEFT JOIN c ON true{account_join}
    """  # noqa: S608 (table and column names from the models; every value is a parameter)


def _uuid_or(value: str, column: str) -> tuple[str, Any]:
    """Match by uuid when `value` is one, else by `column` (as resolve_project/cluster do)."""
    try:
        return "uuid", uuid_lib.UUID(str(value))
    except ValueError:
        return column, value


class _Row(Generic[M]):
    """A model's concrete fields as a plain row holds them, and their database converters
    (JSON, ...), looked up once per process (_resolve runs on PostgreSQL only)."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.fields = model._meta.concrete_fields
        self.attnames = [f.attname for f in self.fields]
        self.converters = [
            (i, converters)
            for i, f in enumerate(self.fields)
            if (converters := f.get_db_converters(connection))
        ]

    def instance(self, values: Sequence[Any]) -> M:
        """A model instance from the row, its fields' converters applied."""
        converted = list(values)
        for i, converters in self.converters:
            for converter in converters:
                converted[i] = converter(converted[i], None, connection)
        return self.model.from_db(connection.alias, self.attnames, converted)


@functools.cache
def _row_of(model: type[M]) -> _Row[M]:
    return _Row(model)


# What jobs_to_forward reads with each job, in its statement's order.
_FORWARD_TABLES = ((Job, "j"), (Cluster, "c"), (Project, "p"), (Organization, "o"))
_SESSION_TABLES = ((Session, "s"), (SessionApp, "a"))


def jobs_to_forward(ids: Sequence[int]) -> list[Job]:
    """The jobs `ids` by id, with what job_spec reads (cluster, project and organization, a
    session's app): as select_related(*SPEC_RELATED) answers, from one statement composed once
    per process on PostgreSQL (the forwarder reads a batch every few milliseconds; compiling
    that select_related costs more than the batch's rows)."""
    from jobs.services.specs import SPEC_RELATED

    if connection.vendor != "postgresql":
        return list(Job.objects.select_related(*SPEC_RELATED).filter(pk__in=ids).order_by("pk"))
    with connection.cursor() as cursor:
        cursor.execute(_forward_sql(), [list(ids)])
        rows = cursor.fetchall()
    jobs = []
    for row in rows:
        values = iter(row)
        job, cluster, project, organization = (
            _row_of(model).instance([next(values) for _ in _row_of(model).fields])
            for model, _ in _FORWARD_TABLES
        )
        session, app = (
            [next(values) for _ in _row_of(model).fields] for model, _ in _SESSION_TABLES
        )
        project.organization = organization
        job.cluster, job.project = cluster, project
        if session[0] is None:
            Job.session.related.set_cached_value(job, None)  # as select_related leaves it
        else:
            job.session = _row_of(Session).instance(session)
            job.session.app = _row_of(SessionApp).instance(app)
        jobs.append(job)
    return jobs


@functools.cache
def _forward_sql() -> str:
    tables = _FORWARD_TABLES + _SESSION_TABLES
    columns = ", ".join(
        f'{alias}."{field.column}"' for model, alias in tables for field in _row_of(model).fields
    )
    return f"""
        SELECT {columns}
        FROM {Job._meta.db_table} j
        JOIN {Cluster._meta.db_table} c ON c.id = j.cluster_id
        JOIN {Project._meta.db_table} p ON p.id = j.project_id
        JOIN {Organization._meta.db_table} o ON o.id = p.organization_id
        LEFT JOIN {Session._meta.db_table} s ON s.job_id = j.id
        LEFT JOIN {SessionApp._meta.db_table} a ON a.id = s.app_id
        WHERE j.id = ANY(%s)
        ORDER BY j.id"""  # noqa: S608 (table and column names from the models; ids a parameter)


def project_is_member(*, user: User, project: Project) -> bool:
    """Whether the user belongs to the project (and so sees its jobs)."""
    return (
        user.is_authenticated and ProjectMember.objects.filter(project=project, user=user).exists()
    )


def project_recent_jobs(*, user: User, project: Project, limit: int = 10) -> list[Job]:
    """The project's newest jobs the user may see (none for a non-member): one query."""
    if not user.is_authenticated:
        return []
    qs = Job.objects.filter(project=project, project__memberships__user=user)
    return list(
        qs.select_related("project", "cluster", "user")
        .only(*LIST_FIELDS)
        .order_by("-created_at", "-id")[:limit]
    )


def project_cluster_accounts(*, project: Project) -> list[ClusterAccount]:
    """The cluster accounts of the project's members, by cluster then member: one query."""
    return list(
        ClusterAccount.objects.filter(user__project_memberships__project=project)
        .select_related("user", "cluster")
        .order_by("cluster__name", "user__username")
    )


def project_open_access_requests(*, project: Project) -> list[ClusterAccessRequest]:
    """Access requests made for the project that are still being decided or provisioned."""
    return list(
        ClusterAccessRequest.objects.filter(
            project=project, state__in=ClusterAccessRequest.OPEN_STATES
        )
        .select_related("user", "cluster")
        .order_by("created_at", "id")
    )


# --- the staff area (/manage/jobs/): any tenant's jobs, for facility admins only --------------


def job_list_for_staff(
    *,
    user: User,
    owner: str | None = None,
    project: str | None = None,
    organization: str | None = None,
    state: str | None = None,
) -> QuerySet[Job]:
    """Every tenant's jobs for a facility admin (nobody else sees any), filtered by the
    submitter's username, the project's or organization's uuid, and state; newest first."""
    if not is_facility_admin(user):
        return Job.objects.none()
    qs = Job.objects.all()
    if owner:
        qs = qs.filter(user__username=owner)
    for field, value in (("project__uuid", project), ("project__organization__uuid", organization)):
        if value:
            try:
                qs = qs.filter(**{field: uuid_lib.UUID(value)})
            except ValueError:
                return Job.objects.none()
    if state:
        qs = qs.filter(state=state)
    return (
        qs.select_related("project", "cluster", "user")
        .only(*LIST_FIELDS)
        .order_by("-created_at", "-id")
    )


def job_get_for_staff(*, user: User, job_uuid: uuid_lib.UUID | str) -> Job:
    """Any tenant's job for a facility admin; JobNotFound for everyone else."""
    if not is_facility_admin(user):
        raise JobNotFound("No such job")
    try:
        key = job_uuid if isinstance(job_uuid, uuid_lib.UUID) else uuid_lib.UUID(str(job_uuid))
    except ValueError:
        raise JobNotFound("No such job") from None
    job = (
        Job.objects.select_related("project", "project__organization", "cluster", "user", "hold")
        .filter(uuid=key)
        .first()
    )
    if job is None:
        raise JobNotFound("No such job")
    return job


@dataclass(frozen=True)
class SessionClock:
    """A session's live figures at `now`: seconds until its time limit ends it and until it
    counts as idle (None when it is not running), and what it has cost so far in SU."""

    running: bool
    time_left_seconds: int | None
    idle_left_seconds: int | None
    idle_minutes: int
    cost_so_far: Decimal
    now: datetime


def session_clock(*, session: Session, now: datetime | None = None) -> SessionClock:
    """Time left = start + time limit − now; idle countdown = last activity (or start) + the
    project's idle limit − now; cost so far = the job's rates (as at its start) × its
    resources × the time it has run (its charge once it is settled)."""
    from jobs.services.sessions import idle_limit

    now = now or timezone.now()
    job = session.job
    limit = idle_limit(job.cluster, project=job.project)
    idle_minutes = int(limit.total_seconds() // 60)
    if job.is_final:
        cost = job.charged_cost if job.charged_cost is not None else Decimal(0)
        return SessionClock(False, None, None, idle_minutes, cost, now)
    if job.state != Job.State.RUNNING or job.started_at is None:
        return SessionClock(False, None, None, idle_minutes, Decimal(0), now)
    end = job.started_at + timedelta(minutes=job.time_limit_minutes)
    ran = max(0, int((min(now, end) - job.started_at).total_seconds()))
    usage = Usage(
        seconds=ran,
        gpus=job.gpus,
        gpu_type=job.gpu_type,
        cpus=job.cpus,
        memory_mb=job.memory_mb,
        tasks=job.array_size or 1,
    )
    rates = cached_rates_at(cluster=job.cluster, at=job.started_at)
    cost = cost_of(cluster=job.cluster, usage=usage, rates=rates).total
    last = max(session.last_activity_at or job.started_at, job.started_at)
    return SessionClock(
        running=True,
        time_left_seconds=max(0, int((end - now).total_seconds())),
        idle_left_seconds=max(0, int((last + limit - now).total_seconds())),
        idle_minutes=idle_minutes,
        cost_so_far=cost,
        now=now,
    )


def session_get_for_user(*, user: User, job_uuid: uuid_lib.UUID | str) -> Session:
    """The session of a job the user may see (with what session_clock reads), or JobNotFound."""
    job = job_get_for_user(user=user, job_uuid=job_uuid)
    session = Session.objects.select_related("app").filter(job=job).first()
    if session is None:
        raise JobNotFound("No such session")
    session.job = job
    return session
