"""REST API for jobs and job templates: thin views over jobs.services and jobs.selectors."""

from __future__ import annotations

import os
import uuid as uuid_lib
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Project, User
from jobs import selectors, services
from jobs.drafts import JobDraft
from jobs.exceptions import InvalidJob
from jobs.models import Job, JobEvent, JobTemplate
from jobs.selectors import (
    SubmitTarget,
    resolve_cluster,
    resolve_project,
    resolve_submit_target,
    resolve_target,
)
from portal.api import (
    CursorPagination,
    FlatFieldsMixin,
    PlainFieldsMixin,
    ResultsPagination,
    StrictFieldsMixin,
    ValuesRenderer,
)
from portal.ids import uuid_prefix_range
from portal.sql import PreparedValues
from portal.users import acting_user as _user
from quotas.models import Cluster


class _DraftFields(serializers.Serializer[Any]):
    """The fields of a job's draft (types only; jobs.validation checks the rest). A field left
    out takes JobDraft's default, the same as the web form's and the CLI's."""

    name = serializers.CharField(max_length=1000, allow_blank=True)
    script = serializers.CharField(allow_blank=True, trim_whitespace=False, required=False)
    image = serializers.CharField(allow_blank=True, required=False, max_length=1000)
    command = serializers.JSONField(required=False)
    partition = serializers.CharField(allow_blank=True, required=False, max_length=200)
    gpus = serializers.IntegerField(required=False)
    gpu_type = serializers.CharField(allow_blank=True, required=False, max_length=200)
    cpus = serializers.IntegerField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    time_limit_minutes = serializers.IntegerField()
    array = serializers.CharField(allow_blank=True, required=False, max_length=1000)
    env = serializers.JSONField(required=False)


class _Target(serializers.Serializer[Any]):
    """Where a job goes: one of the caller's projects (uuid or slug) and a cluster."""

    project = serializers.CharField(max_length=200)
    cluster = serializers.CharField(max_length=200)

    def target(self, user: User) -> tuple[Project, Cluster]:
        data = self.validated_data
        return resolve_target(user, data["project"], data["cluster"])

    def submit_target(self, user: User) -> SubmitTarget:
        """The target and what the submit access check reads, in one statement."""
        data = self.validated_data
        return resolve_submit_target(user, data["project"], data["cluster"])


class JobRequestSerializer(
    PlainFieldsMixin, FlatFieldsMixin, StrictFieldsMixin, _Target, _DraftFields
):
    """The body of POST jobs/ and jobs/estimate/ (types only; the service checks the rest; a
    plainly valid body without DRF's per-field run: PlainFieldsMixin)."""

    def draft(self) -> JobDraft:
        return JobDraft.from_data(self.validated_data)


class JobEventSerializer(serializers.ModelSerializer[JobEvent]):
    actor = serializers.CharField(source="actor.username", default=None)

    class Meta:
        model = JobEvent
        fields = ["created_at", "from_state", "to_state", "message", "actor"]


class JobSerializer(serializers.ModelSerializer[Job]):
    id = serializers.UUIDField(source="uuid")
    project = serializers.UUIDField(source="project.uuid")
    project_name = serializers.CharField(source="project.name")
    cluster = serializers.CharField(source="cluster.name")
    # null for a direct job whose cluster user maps to no portal user (see cluster_user).
    user = serializers.CharField(source="user.username", allow_null=True, read_only=True)
    cluster_user = serializers.CharField(
        source="cluster_username", help_text="the cluster account the job ran as"
    )
    origin = serializers.ChoiceField(
        choices=Job.Origin.choices,
        help_text="portal, or direct: submitted outside the portal (e.g. sbatch on a login node), "
        "found in the cluster's accounting and charged from it, with no hold",
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "project",
            "project_name",
            "cluster",
            "user",
            "cluster_user",
            "origin",
            "state",
            "gpus",
            "gpu_type",
            "cpus",
            "memory_mb",
            "time_limit_minutes",
            "array",
            "array_size",
            "backend_id",
            "exit_code",
            "created_at",
            "started_at",
            "ended_at",
            "estimated_cost",
            "charged_cost",
        ]


# A page of jobs: rows read as values, rendered as JobSerializer renders jobs.
JOB_ROWS = ValuesRenderer(JobSerializer)


def held_su(job: Job) -> str:
    """SU still held for the job (0 once settled)."""
    hold = job.hold
    if hold is None or hold.state != hold.State.OPEN:
        return "0.0000"
    return str(hold.amount)


class JobDetailSerializer(JobSerializer):
    held = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [
            *JobSerializer.Meta.fields,
            "state_reason",
            "missing_since",
            "partition",
            "script",
            "image",
            "command",
            "env",
            "submitted_at",
            "elapsed_seconds",
            "usage",
            "uncovered_cost",
            "held",
            "events",
        ]

    def get_held(self, job: Job) -> str:
        return held_su(job)

    def get_events(self, job: Job) -> list[dict[str, Any]]:
        # A job just submitted carries its one event (job_submit); others are read.
        events = getattr(job, "submit_events", None)
        if events is None:
            events = selectors.job_events(job=job)
        # drf-stubs types Serializer(many=True) as the serializer itself, whose data is a dict:
        # it is a ListSerializer, whose data is a list.
        return JobEventSerializer(events, many=True).data  # type: ignore[return-value]


# One job (polled by scripts, and the answer to a submit), rendered as JobDetailSerializer does.
JOB_DETAIL = ValuesRenderer(JobDetailSerializer, sources={"held": "held", "events": "events"})
EVENT_ROWS = ValuesRenderer(JobEventSerializer)


def render_job(job: Job) -> dict[str, Any]:
    events = getattr(job, "submit_events", None)
    if events is None:
        events = selectors.job_events(job=job)
    return JOB_DETAIL.render_object(
        job,
        held=held_su(job),
        events=[EVENT_ROWS.render_object(event) for event in events],
    )


class CostLineSerializer(serializers.Serializer[Any]):
    resource = serializers.CharField()
    quantity = serializers.DecimalField(max_digits=24, decimal_places=4)
    rate = serializers.DecimalField(max_digits=20, decimal_places=6)
    cost = serializers.DecimalField(max_digits=24, decimal_places=4)


class JobEstimateSerializer(serializers.Serializer[Any]):
    """The answer of POST jobs/estimate/: what submit would hold, line by line."""

    estimated_cost = serializers.DecimalField(max_digits=24, decimal_places=4)
    breakdown = CostLineSerializer(many=True)


# One read of a job's log. Built with inline_serializer: a field named `data` would shadow
# Serializer.data on a declared class.
LogChunkSerializer = inline_serializer(
    name="LogChunk",
    fields={
        "data": serializers.CharField(help_text="UTF-8 text (undecodable bytes replaced)"),
        "next_offset": serializers.IntegerField(help_text="where the next read starts"),
        "eof": serializers.BooleanField(help_text="the job has ended and nothing more will come"),
    },
)


class ResultFileSerializer(serializers.Serializer[Any]):
    path = serializers.CharField(help_text="relative to the job's output directory")
    size = serializers.IntegerField(help_text="bytes")
    modified = serializers.DateTimeField(allow_null=True)


class ResultListSerializer(serializers.Serializer[Any]):
    results = ResultFileSerializer(many=True)


def _shape_and_params(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """None values change the statement (a filter left out); the others are its parameters."""
    shape = {name: None for name, value in values.items() if value is None}
    return shape, {name: value for name, value in values.items() if value is not None}


JOB_PROJECT_IDS = PreparedValues(selectors.job_list_project_ids_of)
JOB_CLUSTER_IDS = PreparedValues(selectors.job_list_cluster_ids)
JOB_PAGE = PreparedValues(
    lambda ordering, start, stop, **filters: (
        selectors.job_list_of_projects(**filters)
        .order_by(*ordering)
        .values(*JOB_ROWS.keys)[start:stop]
    )
)


class _FirstPage:
    """The caller's jobs as CursorPagination reads them for a page without a cursor
    (`order_by(...)[start:stop]`), from the compiled statements: the same rows as
    `job_list_for_user(...).values(*JOB_ROWS.keys)`."""

    def __init__(
        self, *, user_id: int, project: str | None, cluster: str | None, filters: dict[str, Any]
    ) -> None:
        self.user_id = user_id
        self.project = project
        self.cluster = cluster
        self.filters = filters
        self.ordering: tuple[str, ...] = ()

    def order_by(self, *ordering: str) -> _FirstPage:
        self.ordering = ordering
        return self

    def __getitem__(self, window: slice) -> list[dict[str, Any]]:
        ref = selectors.split_project_ref(self.project)
        ids = JOB_PROJECT_IDS.rows({"user_id": self.user_id, **ref})
        values: dict[str, Any] = {"project_ids": [row["pk"] for row in ids], **self.filters}
        values["cluster_ids"] = None
        if self.cluster:
            clusters = JOB_CLUSTER_IDS.rows({"name": self.cluster})
            values["cluster_ids"] = [row["pk"] for row in clusters]
        shape, params = _shape_and_params(values)
        shape.update(ordering=self.ordering, start=window.start, stop=window.stop)
        return JOB_PAGE.rows(params, shape)


class JobListView(APIView):
    """GET: the caller's visible jobs, newest first (cursor pages). POST: submit a job."""

    pagination_class = CursorPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("project", str, description="project uuid or slug"),
            OpenApiParameter("state", str),
            OpenApiParameter("cluster", str, description="cluster name"),
            OpenApiParameter("origin", str, enum=Job.Origin.values),
            OpenApiParameter("name", str, description="part of the job's name (any case)"),
            OpenApiParameter(
                "id_prefix",
                str,
                description="the first hexadecimal digits of the job id (the short id the "
                "pages show is its first 8; dashes are ignored): the jobs whose id starts so",
            ),
        ],
        responses=JobSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        state = request.query_params.get("state") or None
        if state and state not in Job.State.values:
            raise InvalidJob(f"Unknown state '{state}'", field="state")
        origin = request.query_params.get("origin") or None
        if origin and origin not in Job.Origin.values:
            raise InvalidJob(f"Unknown origin '{origin}' (portal or direct)", field="origin")
        id_prefix = request.query_params.get("id_prefix") or None
        id_range = uuid_prefix_range(id_prefix) if id_prefix else None
        if id_prefix and id_range is None:
            raise InvalidJob(
                f"id_prefix '{id_prefix}' is not the start of a job id (1 to 32 hexadecimal "
                "digits)",
                field="id_prefix",
            )
        project = request.query_params.get("project") or None
        cluster = request.query_params.get("cluster") or None
        name = request.query_params.get("name") or None
        paginator = self.pagination_class()
        rows: Any
        if paginator.cursor_query_param in request.query_params or id_range or name:  # the ORM
            qs = selectors.job_list_for_user(
                user=_user(request),
                project=project,
                state=state,
                cluster=cluster,
                origin=origin,
                name=name,
                id_range=id_range,
            )
            rows = qs.values(*JOB_ROWS.keys)
        else:  # the first page, which scripts poll: statements compiled once (portal.sql)
            rows = _FirstPage(
                user_id=_user(request).pk,
                project=project,
                cluster=cluster,
                filters={"state": state, "origin": origin},
            )
        page: Any = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(JOB_ROWS.render(page))

    @extend_schema(
        request=JobRequestSerializer,
        responses={201: JobDetailSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER)],
    )
    def post(self, request: Request) -> Response:
        serializer = JobRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project, cluster, access = serializer.submit_target(_user(request))
        job = services.job_submit(
            user=_user(request),
            project=project,
            cluster=cluster,
            draft=serializer.draft(),
            access=access,
            idempotency_key=request.headers.get("Idempotency-Key", "").strip(),
        )
        # A new job is answered from memory (its project, cluster, user, hold and event are
        # the objects just stored); a replayed key answers with the stored job as it is now.
        replay = not hasattr(job, "submit_events")
        if replay:
            job = selectors.job_get_for_user(user=_user(request), job_uuid=job.uuid)
        status = HTTPStatus.OK if replay else HTTPStatus.CREATED
        return Response(render_job(job), status=status)


class BatchJobSerializer(PlainFieldsMixin, StrictFieldsMixin, _DraftFields):
    """One job of POST jobs/batch/ (types only; the service checks the rest)."""


class JobBatchRequestSerializer(StrictFieldsMixin, _Target):
    """The body of POST jobs/batch/: up to 500 jobs for one project and cluster."""

    # The service refuses an empty batch or one over BATCH_MAX (a 400 naming `jobs`).
    jobs = BatchJobSerializer(many=True)


class BatchJobResultSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(source="uuid")
    state = serializers.CharField()
    estimated_cost = serializers.DecimalField(max_digits=24, decimal_places=4)


class JobBatchResultSerializer(serializers.Serializer[Any]):
    jobs = BatchJobResultSerializer(many=True)
    estimated_cost = serializers.DecimalField(
        max_digits=24, decimal_places=4, help_text="the batch's total"
    )


class JobBatchView(APIView):
    """POST: submit many jobs at once, all or nothing (201; 200 when an Idempotency-Key
    replays an earlier batch)."""

    @extend_schema(
        request=JobBatchRequestSerializer,
        responses={201: JobBatchResultSerializer, 200: JobBatchResultSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER)],
    )
    def post(self, request: Request) -> Response:
        user = _user(request)
        serializer = JobBatchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project, cluster, access = serializer.submit_target(user)
        jobs = services.job_submit_many(
            user=user,
            project=project,
            cluster=cluster,
            drafts=[JobDraft.from_data(job) for job in serializer.validated_data["jobs"]],
            access=access,
            idempotency_key=request.headers.get("Idempotency-Key", "").strip(),
        )
        replay = not hasattr(jobs[0], "submit_events")
        body = {
            "jobs": jobs,
            "estimated_cost": sum((job.estimated_cost for job in jobs), Decimal(0)),
        }
        status = HTTPStatus.OK if replay else HTTPStatus.CREATED
        return Response(JobBatchResultSerializer(body).data, status=status)


class JobEstimateView(APIView):
    @extend_schema(request=JobRequestSerializer, responses=JobEstimateSerializer)
    def post(self, request: Request) -> Response:
        serializer = JobRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project, cluster = serializer.target(_user(request))
        cost = services.job_estimate(
            user=_user(request), project=project, cluster=cluster, draft=serializer.draft()
        )
        return Response(
            {
                "estimated_cost": str(cost.total),
                "breakdown": CostLineSerializer(cost.breakdown, many=True).data,
            }
        )


class JobDetailView(APIView):
    @extend_schema(responses=JobDetailSerializer)
    def get(self, request: Request, job_uuid: uuid_lib.UUID) -> Response:
        job = selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
        return Response(render_job(job))


class JobCancelView(APIView):
    @extend_schema(request=None, responses=JobDetailSerializer)
    def post(self, request: Request, job_uuid: uuid_lib.UUID) -> Response:
        job = selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
        job = services.job_cancel(user=_user(request), job=job)
        job = selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
        status = HTTPStatus.OK if job.is_final else HTTPStatus.ACCEPTED
        return Response(JobDetailSerializer(job).data, status=status)


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidJob(f"{name} must be a whole number", field=name) from None


class JobLogView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("stream", str, enum=["stdout", "stderr"]),
            OpenApiParameter("offset", int, description="byte offset; negative = from the end"),
            OpenApiParameter("limit", int),
        ],
        responses=LogChunkSerializer,
    )
    def get(self, request: Request, job_uuid: uuid_lib.UUID) -> Response:
        job = selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
        chunk = services.job_read_log(
            user=_user(request),
            job=job,
            stream=request.query_params.get("stream", "stdout"),
            offset=_int_param(request, "offset", 0) or 0,
            limit=_int_param(request, "limit", None),
        )
        return Response(
            {
                "data": chunk.data.decode("utf-8", errors="replace"),
                "next_offset": chunk.next_offset,
                "eof": chunk.eof,
            }
        )


class JobResultsView(APIView):
    @extend_schema(operation_id="v1_jobs_results_list", responses=ResultListSerializer)
    def get(self, request: Request, job_uuid: uuid_lib.UUID) -> Response:
        job = selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
        files = services.job_results(user=_user(request), job=job)
        return Response(
            {"results": [{"path": f.path, "size": f.size, "modified": f.modified} for f in files]}
        )


class JobResultDownloadView(APIView):
    @extend_schema(
        operation_id="v1_jobs_results_download",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, job_uuid: uuid_lib.UUID, path: str) -> FileResponse:
        job = selectors.job_get_for_user(user=_user(request), job_uuid=job_uuid)
        handle = services.job_open_result(user=_user(request), job=job, path=path)
        # A job writes these files: always a download of bytes, never something a browser
        # renders from the portal's origin by its name (.html, .svg), as the schema says.
        return FileResponse(
            handle,
            as_attachment=True,
            filename=os.path.basename(path),
            content_type="application/octet-stream",
        )


class JobTemplateSerializer(StrictFieldsMixin, serializers.ModelSerializer[JobTemplate]):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    cluster = serializers.CharField(required=False, allow_null=True, allow_blank=True)

    class Meta:
        model = JobTemplate
        fields = [
            "id",
            "name",
            "description",
            "project",
            "cluster",
            "script",
            "image",
            "command",
            "gpus",
            "gpu_type",
            "cpus",
            "memory_mb",
            "time_limit_minutes",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def to_representation(self, instance: JobTemplate) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["project"] = str(instance.project.uuid) if instance.project else None
        data["cluster"] = instance.cluster.name if instance.cluster else None
        return data


class JobTemplateListView(APIView):
    pagination_class = ResultsPagination

    @extend_schema(responses=JobTemplateSerializer(many=True))
    def get(self, request: Request) -> Response:
        templates = selectors.job_templates_for_user(user=_user(request))
        data = JobTemplateSerializer(templates, many=True).data
        return self.pagination_class().get_paginated_response(data)

    @extend_schema(request=JobTemplateSerializer, responses={201: JobTemplateSerializer})
    def post(self, request: Request) -> Response:
        serializer = JobTemplateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        project = data.pop("project", None)
        cluster = data.pop("cluster", None)
        template = services.job_template_create(
            user=_user(request),
            project=resolve_project(_user(request), project) if project else None,
            cluster=resolve_cluster(cluster) if cluster else None,
            **data,
        )
        return Response(JobTemplateSerializer(template).data, status=HTTPStatus.CREATED)
