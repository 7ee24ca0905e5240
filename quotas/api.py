"""REST API for clusters and rates, allocations and their ledger, and the grant workflow.

Thin: serializers parse, then one selector or service. Objects are looked up through selectors
scoped to the caller, so another tenant's UUID answers 404; a visible object the caller may not
change answers 403 with a code; a wrong state answers 409 naming it.
"""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, parsers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import organization_get_for_user, project_get_for_user
from portal.api import (
    CursorPagination,
    JSONParser,
    ResultsPagination,
    StrictFieldsMixin,
    ValuesRenderer,
)
from portal.errors import NotFound
from portal.ids import as_uuid
from portal.sql import PreparedValues
from portal.users import acting_user
from quotas import documents, selectors, services
from quotas.models import Allocation, AllocationRequest, Cluster, LedgerEntry
from quotas.services.trials import trial_start

MIN_SU = Decimal("0.0001")


def _su_field() -> serializers.DecimalField:
    """A read-only SU amount rendered as a decimal string ("12.5000")."""
    return serializers.DecimalField(
        max_digits=18, decimal_places=4, coerce_to_string=True, read_only=True
    )


# --- clusters -------------------------------------------------------------------------------


class RateSerializer(serializers.Serializer[Any]):
    resource = serializers.CharField()
    gpu_type = serializers.CharField()
    su_per_unit = serializers.DecimalField(max_digits=14, decimal_places=6)
    effective_from = serializers.DateTimeField()


class ClusterSerializer(serializers.ModelSerializer[Cluster]):
    id = serializers.UUIDField(source="uuid", read_only=True)
    display_name = serializers.CharField(source="__str__", read_only=True)
    gpu_types = serializers.ListField(child=serializers.CharField(), read_only=True)
    options = serializers.SerializerMethodField()
    rates = serializers.SerializerMethodField()
    upcoming_rates = serializers.SerializerMethodField()

    class Meta:
        model = Cluster
        fields = [
            "id",
            "uuid",
            "name",
            "display_name",
            "kind",
            "gpu_types",
            "options",
            "rates",
            "upcoming_rates",
        ]
        read_only_fields = fields

    def get_options(self, cluster: Cluster) -> dict[str, Any]:
        return selectors.public_options(cluster)

    def _rows(self, cluster: Cluster, *, current: bool) -> list[dict[str, Any]]:
        rows = self.context["rates"].get(cluster.pk, [])
        serializer = RateSerializer([r for r in rows if r.current is current], many=True)
        # drf-stubs types Serializer(many=True) as the serializer itself, whose data is a dict:
        # it is a ListSerializer, whose data is a list.
        return serializer.data  # type: ignore[return-value]

    @extend_schema_field(RateSerializer(many=True))
    def get_rates(self, cluster: Cluster) -> list[dict[str, Any]]:
        return self._rows(cluster, current=True)

    @extend_schema_field(RateSerializer(many=True))
    def get_upcoming_rates(self, cluster: Cluster) -> list[dict[str, Any]]:
        return self._rows(cluster, current=False)


class ClusterListView(APIView):
    """Enabled clusters the caller may use, with the rates in force and those scheduled."""

    pagination_class = ResultsPagination

    @extend_schema(responses=ClusterSerializer(many=True))
    def get(self, request: Request) -> Response:
        clusters = selectors.clusters_for_user(acting_user(request))
        rates = selectors.rate_schedule(clusters)
        data = ClusterSerializer(clusters, many=True, context={"rates": rates}).data
        return self.pagination_class().get_paginated_response(data)


# --- allocations ------------------------------------------------------------------------------


class AllocationSerializer(serializers.ModelSerializer[Allocation]):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.UUIDField(source="project.uuid", read_only=True)
    project_name = serializers.CharField(source="project.name", read_only=True)
    organization = serializers.CharField(source="project.organization.slug", read_only=True)
    clusters = serializers.SerializerMethodField()
    credited = _su_field()
    held = _su_field()
    charged = _su_field()
    available = _su_field()

    class Meta:
        model = Allocation
        fields = [
            "id",
            "uuid",
            "project",
            "project_name",
            "organization",
            "kind",
            "status",
            "status_reason",
            "clusters",
            "starts_at",
            "ends_at",
            "credited",
            "held",
            "charged",
            "available",
            "memo",
            "created_at",
        ]
        read_only_fields = fields

    def get_clusters(self, allocation: Allocation) -> list[str]:
        return sorted(c.name for c in allocation.clusters.all())


class AllocationListView(generics.ListAPIView[Allocation]):
    """The caller's allocations (`?project=<uuid>`, `?status=active`), soonest-ending first."""

    serializer_class = AllocationSerializer
    pagination_class = ResultsPagination

    def get_queryset(self) -> QuerySet[Allocation]:
        qs = selectors.allocations_for_user(self.request.user)
        if project := self.request.query_params.get("project"):
            qs = qs.filter(project=selectors.project_for_user(self.request.user, project))
        if status := self.request.query_params.get("status"):
            qs = qs.filter(status=status)
        return qs.order_by("ends_at", "id")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Rows as values (two statements, like the prefetch), rendered as the serializer does.
        if project := request.query_params.get("project"):
            rows, clusters = _project_allocation_rows(
                acting_user(request).pk, project, request.query_params.get("status")
            )
        else:
            rows = list(self.get_queryset().values(*ALLOCATION_ROWS.keys, "pk"))
            clusters = selectors.allocation_cluster_names([row["pk"] for row in rows])
        for row in rows:
            row["clusters"] = clusters.get(row["pk"], [])
            row["available"] = row["credited"] - row["held"] - row["charged"]
        return ResultsPagination().get_paginated_response(ALLOCATION_ROWS.render(rows))


# The allocation list: rows read as values, rendered as AllocationSerializer renders them.
ALLOCATION_ROWS = ValuesRenderer(
    AllocationSerializer, sources={"clusters": "clusters", "available": "available"}
)
VISIBLE_PROJECT = PreparedValues(selectors.visible_project_ids)
VISIBLE_PROJECT_ALLOCATIONS = PreparedValues(
    lambda **filters: selectors.visible_project_allocations(**filters).values(
        *ALLOCATION_ROWS.keys, "pk", "project_id"
    )
)
PROJECT_ALLOCATION_CLUSTERS = PreparedValues(selectors.project_allocation_cluster_names)


def _project_allocation_rows(
    user_id: int, project: str, status: str | None
) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    """One project's allocations (polled by scripts) from statements compiled once
    (portal.sql): the allocations of the project if the caller may see it, then their clusters
    (a third statement only when there are none: is the project there at all, or a 404?).
    Its allocations are those allocations_for_user lets the caller see, whoever they are."""
    key = as_uuid(project)
    if key is None:
        raise NotFound("Project not found", field="project")
    params: dict[str, Any] = {"user_id": user_id, "project_uuid": key}
    if status:
        params["status"] = status
    rows = VISIBLE_PROJECT_ALLOCATIONS.rows(params)
    if not rows:
        if not VISIBLE_PROJECT.rows({"user_id": user_id, "project_uuid": key}):
            raise NotFound("Project not found", field="project")
        return [], {}
    clusters: dict[int, list[str]] = {}
    for pair in PROJECT_ALLOCATION_CLUSTERS.rows({"project_id": rows[0]["project_id"]}):
        clusters.setdefault(pair["allocation_id"], []).append(pair["cluster__name"])
    return rows, {pk: sorted(names) for pk, names in clusters.items()}


class AllocationDetailView(APIView):
    @extend_schema(responses=AllocationSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        allocation = selectors.allocation_for_user(request.user, uuid)
        return Response(AllocationSerializer(allocation).data)


class LedgerEntrySerializer(serializers.ModelSerializer[LedgerEntry]):
    amount = _su_field()
    actor = serializers.CharField(source="actor.username", read_only=True, allow_null=True)
    cluster = serializers.CharField(source="cluster.name", read_only=True, allow_null=True)
    job = serializers.UUIDField(source="job_uuid", read_only=True, allow_null=True)
    key = serializers.CharField(source="idempotency_key", read_only=True)

    class Meta:
        model = LedgerEntry
        fields = ["kind", "amount", "cluster", "job", "actor", "memo", "key", "created_at"]
        read_only_fields = fields


class AllocationLedgerView(generics.ListAPIView[LedgerEntry]):
    """The allocation's ledger, newest first, cursor-paginated (`?kind=charge` filters)."""

    serializer_class = LedgerEntrySerializer
    pagination_class = CursorPagination

    def get_queryset(self) -> QuerySet[LedgerEntry]:
        allocation = selectors.allocation_for_user(self.request.user, self.kwargs["uuid"])
        qs = selectors.allocation_ledger(allocation)
        if kind := self.request.query_params.get("kind"):
            qs = qs.filter(kind=kind)
        return qs


# --- grant requests ---------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class ClusterRefField(serializers.Field[Cluster, Any, str, Any]):
    """A cluster by name (or UUID) among enabled ones; 'may use' is checked by the service."""

    default_error_messages = {"unknown": "Unknown cluster '{value}'."}

    def to_internal_value(self, data: Any) -> Cluster:
        value = str(data)
        cluster = Cluster.objects.filter(name=value).first()
        if cluster is None and (ident := as_uuid(value)) is not None:
            cluster = Cluster.objects.filter(uuid=ident).first()
        if cluster is None:
            self.fail("unknown", value=value)
        return cluster

    def to_representation(self, value: Cluster) -> str:
        return value.name


class RequestEventSerializer(serializers.Serializer[Any]):
    actor = serializers.CharField(source="actor.username")
    from_state = serializers.CharField()
    to_state = serializers.CharField()
    comment = serializers.CharField()
    changes = serializers.DictField()
    created_at = serializers.DateTimeField()


class AllocationRequestSerializer(serializers.ModelSerializer[AllocationRequest]):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.UUIDField(source="project.uuid", read_only=True)
    project_name = serializers.CharField(source="project.name", read_only=True)
    organization = serializers.CharField(source="project.organization.slug", read_only=True)
    extends = serializers.UUIDField(source="extends.uuid", read_only=True, allow_null=True)
    allocation = serializers.UUIDField(source="allocation.uuid", read_only=True, allow_null=True)
    amount = _su_field()
    clusters = serializers.SerializerMethodField()
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)
    document = serializers.SerializerMethodField()
    document_name = serializers.SerializerMethodField()
    events = RequestEventSerializer(many=True, read_only=True)

    class Meta:
        model = AllocationRequest
        fields = [
            "id",
            "uuid",
            "project",
            "project_name",
            "organization",
            "kind",
            "extends",
            "title",
            "amount",
            "clusters",
            "start_date",
            "end_date",
            "justification",
            "funder",
            "award_number",
            "document",
            "document_name",
            "state",
            "requested_by",
            "allocation",
            "events",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_clusters(self, request: AllocationRequest) -> list[str]:
        return sorted(c.name for c in request.clusters.all())

    def get_document(self, request: AllocationRequest) -> str | None:
        """Where to download the document (the API view: token or session), or null."""
        if not request.document:
            return None
        return reverse("api-allocation-request-document", kwargs={"uuid": request.uuid})

    def get_document_name(self, request: AllocationRequest) -> str | None:
        """The uploaded file's name, for display (it is not where the file is stored)."""
        return request.document_display_name if request.document else None


class AllocationRequestListSerializer(AllocationRequestSerializer):
    class Meta(AllocationRequestSerializer.Meta):
        fields = [f for f in AllocationRequestSerializer.Meta.fields if f != "events"]
        read_only_fields = fields


class _RequestFieldsSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    title = serializers.CharField(max_length=200)
    amount = serializers.DecimalField(max_digits=18, decimal_places=4, min_value=MIN_SU)
    clusters = serializers.ListField(child=ClusterRefField(), allow_empty=False)
    start_date = serializers.DateField()
    end_date = serializers.DateField()
    justification = serializers.CharField(max_length=20_000)
    funder = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    award_number = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )
    document = serializers.FileField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("start_date"), attrs.get("end_date")
        if start and end and end <= start:
            raise serializers.ValidationError({"end_date": ["end_date must be after start_date."]})
        return attrs


class AllocationRequestCreateSerializer(_RequestFieldsSerializer):
    project = serializers.UUIDField()
    kind = serializers.ChoiceField(
        choices=AllocationRequest.Kind.choices, default=AllocationRequest.Kind.NEW
    )
    extends = serializers.UUIDField(required=False, allow_null=True, default=None)


class AllocationRequestUpdateSerializer(_RequestFieldsSerializer):
    pass


class ApproveSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    amount = serializers.DecimalField(
        max_digits=18, decimal_places=4, min_value=MIN_SU, required=False
    )
    start_date = serializers.DateField(required=False)
    end_date = serializers.DateField(required=False)
    comment = serializers.CharField(max_length=20_000, required=False, allow_blank=True, default="")


class CommentSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    comment = serializers.CharField(max_length=20_000)


_PARSERS = [JSONParser, parsers.MultiPartParser, parsers.FormParser]


def _request_detail(request: AllocationRequest, status: int = HTTPStatus.OK) -> Response:
    fresh = (
        AllocationRequest.objects.select_related(
            "project__organization", "requested_by", "allocation", "extends"
        )
        .prefetch_related("clusters", "events__actor")
        .get(pk=request.pk)
    )
    return Response(AllocationRequestSerializer(fresh).data, status=status)


class AllocationRequestListView(generics.ListAPIView[AllocationRequest]):
    """My projects' requests, newest first; `?queue=1` is the reviewers' queue (oldest first)."""

    serializer_class = AllocationRequestListSerializer
    parser_classes = _PARSERS

    def get_queryset(self) -> QuerySet[AllocationRequest]:
        params = self.request.query_params
        if params.get("queue") in ("1", "true", "yes"):
            return selectors.review_queue(self.request.user, state=params.get("state"))
        qs = selectors.my_allocation_requests(self.request.user)
        if project := params.get("project"):
            qs = qs.filter(project=selectors.project_for_user(self.request.user, project))
        if state := params.get("state"):
            qs = qs.filter(state=state)
        return qs

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.get_queryset()
        if request.query_params.get("queue") in ("1", "true", "yes"):
            # The queue is short and ordered oldest first: no cursor.
            return Response({"results": self.get_serializer(queryset[:500], many=True).data})
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=AllocationRequestCreateSerializer,
        responses={HTTPStatus.CREATED: AllocationRequestSerializer},
    )
    def post(self, request: Request) -> Response:
        body = AllocationRequestCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        project = selectors.project_for_user(request.user, data.pop("project"))
        extends = None
        if ident := data.pop("extends"):
            extends = (
                selectors.allocations_for_user(request.user)
                .filter(uuid=ident, project=project)
                .first()
            )
            if extends is None:
                from quotas.exceptions import InvalidRequest

                raise InvalidRequest("Unknown allocation to extend", field="extends")
        created = services.allocation_request_create(
            actor=acting_user(request), project=project, extends=extends, **data
        )
        return _request_detail(created, HTTPStatus.CREATED)


class AllocationRequestDetailView(APIView):
    parser_classes = _PARSERS

    @extend_schema(responses=AllocationRequestSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        return _request_detail(selectors.allocation_request_for_user(request.user, uuid))

    @extend_schema(request=AllocationRequestUpdateSerializer, responses=AllocationRequestSerializer)
    def patch(self, request: Request, uuid: str) -> Response:
        target = selectors.allocation_request_for_user(request.user, uuid)
        body = AllocationRequestUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        services.allocation_request_update(
            actor=acting_user(request),
            request=target,
            clusters=data.pop("clusters", None),
            document=data.pop("document", None),
            **data,
        )
        return _request_detail(target)


class AllocationRequestDocumentView(APIView):
    """The request's document, streamed as an attachment to those who may see the request."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The file answers in its own type; errors in JSON whatever the client accepts.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="v1_allocation_requests_document",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, uuid: str) -> FileResponse:
        target = selectors.allocation_request_for_user(request.user, uuid)
        return documents.document_response(target)


class _TransitionView(APIView):
    parser_classes = _PARSERS
    body_class: type[serializers.Serializer[Any]] | None = None

    def act(self, request: Request, target: AllocationRequest, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def post(self, request: Request, uuid: str) -> Response:
        target = selectors.allocation_request_for_user(request.user, uuid)
        data: dict[str, Any] = {}
        if self.body_class is not None:
            body = self.body_class(data=request.data)
            body.is_valid(raise_exception=True)
            data = dict(body.validated_data)
        self.act(request, target, data)
        return _request_detail(target)


class AllocationRequestSubmitView(_TransitionView):
    @extend_schema(request=None, responses=AllocationRequestSerializer)
    def post(self, request: Request, uuid: str) -> Response:
        return super().post(request, uuid)

    def act(self, request: Request, target: AllocationRequest, data: dict[str, Any]) -> None:
        services.allocation_request_submit(actor=acting_user(request), request=target)


class AllocationRequestApproveView(_TransitionView):
    body_class = ApproveSerializer

    @extend_schema(request=ApproveSerializer, responses=AllocationRequestSerializer)
    def post(self, request: Request, uuid: str) -> Response:
        return super().post(request, uuid)

    def act(self, request: Request, target: AllocationRequest, data: dict[str, Any]) -> None:
        services.allocation_request_approve(actor=acting_user(request), request=target, **data)


class AllocationRequestRejectView(_TransitionView):
    body_class = CommentSerializer

    @extend_schema(request=CommentSerializer, responses=AllocationRequestSerializer)
    def post(self, request: Request, uuid: str) -> Response:
        return super().post(request, uuid)

    def act(self, request: Request, target: AllocationRequest, data: dict[str, Any]) -> None:
        services.allocation_request_reject(actor=acting_user(request), request=target, **data)


class AllocationRequestChangesView(_TransitionView):
    body_class = CommentSerializer

    @extend_schema(request=CommentSerializer, responses=AllocationRequestSerializer)
    def post(self, request: Request, uuid: str) -> Response:
        return super().post(request, uuid)

    def act(self, request: Request, target: AllocationRequest, data: dict[str, Any]) -> None:
        services.allocation_request_request_changes(
            actor=acting_user(request), request=target, **data
        )


# --- self-serve trial ------------------------------------------------------------------------


class TrialStartSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    project = serializers.UUIDField(
        required=False,
        help_text="The project credited (default: the organization's only project, or a new "
        "project 'Trial' when it has none).",
    )


class TrialStartView(APIView):
    """Start the organization's one self-serve trial (company organizations, owners/admins
    with a verified email): 201 with the trial allocation; 409 `trial_already_used` after."""

    @extend_schema(
        request=TrialStartSerializer,
        responses={HTTPStatus.CREATED: AllocationSerializer},
    )
    def post(self, request: Request, uuid: str) -> Response:
        body = TrialStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        organization = organization_get_for_user(request.user, uuid)
        project = None
        if project_uuid := body.validated_data.get("project"):
            project = project_get_for_user(request.user, project_uuid)
        allocation = trial_start(
            actor=acting_user(request), organization=organization, project=project
        )
        return Response(AllocationSerializer(allocation).data, status=HTTPStatus.CREATED)
