"""REST API for cluster access requests: thin views over jobs.services and jobs.selectors.

GET/POST cluster-access-requests/        mine (facility admins: everyone's; ?state=pending)
GET      cluster-access-requests/{id}/
POST     cluster-access-requests/{id}/approve/   facility admins
POST     cluster-access-requests/{id}/reject/    facility admins, {"reason": "..."}
"""

from __future__ import annotations

import uuid as uuid_lib
from http import HTTPStatus
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import selectors, services
from jobs.models import ClusterAccessRequest
from portal.api import CursorPagination, StrictFieldsMixin
from portal.users import acting_user


class AccessRequestSerializer(serializers.ModelSerializer[ClusterAccessRequest]):
    id = serializers.UUIDField(source="uuid", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)
    project = serializers.UUIDField(source="project.uuid", read_only=True)
    project_name = serializers.CharField(source="project.name", read_only=True)
    cluster = serializers.CharField(source="cluster.name", read_only=True)
    decided_by = serializers.CharField(source="decided_by.username", default=None, read_only=True)
    account_uid = serializers.IntegerField(source="account.uid", default=None, read_only=True)

    class Meta:
        model = ClusterAccessRequest
        fields = [
            "id",
            "user",
            "project",
            "project_name",
            "cluster",
            "username",
            "uid",
            "account_uid",
            "state",
            "reason",
            "automatic",
            "decided_by",
            "decided_at",
            "provisioned_at",
            "created_at",
        ]
        read_only_fields = fields


class AccessRequestCreateSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    project = serializers.CharField(max_length=200, help_text="project uuid or slug")
    cluster = serializers.CharField(max_length=200, help_text="cluster name or uuid")
    username = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="the cluster user name you want; empty = derived from your email",
    )
    uid = serializers.IntegerField(required=False, allow_null=True, default=None)


class RejectSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=1000)


def _detail(request: Request, target: ClusterAccessRequest, status: int) -> Response:
    fresh = selectors.access_request_get_for_user(
        user=acting_user(request), request_uuid=target.uuid
    )
    return Response(AccessRequestSerializer(fresh).data, status=status)


class AccessRequestListView(generics.ListAPIView[ClusterAccessRequest]):
    """My access requests, newest first (facility admins: everyone's); `?state=` filters."""

    serializer_class = AccessRequestSerializer
    pagination_class = CursorPagination

    def get_queryset(self) -> QuerySet[ClusterAccessRequest]:
        requests = selectors.access_requests_for_user(user=acting_user(self.request))
        if state := self.request.query_params.get("state"):
            requests = requests.filter(state=state)
        return requests

    @extend_schema(request=AccessRequestCreateSerializer, responses=AccessRequestSerializer)
    def post(self, request: Request) -> Response:
        body = AccessRequestCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        created = services.access_request_create(
            actor=acting_user(request),
            project=selectors.project_for_member(user=acting_user(request), value=data["project"]),
            cluster=selectors.resolve_cluster(data["cluster"]),
            username=data["username"],
            uid=data["uid"],
        )
        return _detail(request, created, HTTPStatus.CREATED)


class AccessRequestDetailView(APIView):
    @extend_schema(responses=AccessRequestSerializer)
    def get(self, request: Request, request_uuid: uuid_lib.UUID) -> Response:
        target = selectors.access_request_get_for_user(
            user=acting_user(request), request_uuid=request_uuid
        )
        return Response(AccessRequestSerializer(target).data)


class AccessRequestApproveView(APIView):
    @extend_schema(request=None, responses=AccessRequestSerializer)
    def post(self, request: Request, request_uuid: uuid_lib.UUID) -> Response:
        target = selectors.access_request_get_for_user(
            user=acting_user(request), request_uuid=request_uuid
        )
        services.access_request_approve(actor=acting_user(request), request=target)
        return _detail(request, target, HTTPStatus.OK)


class AccessRequestRejectView(APIView):
    @extend_schema(request=RejectSerializer, responses=AccessRequestSerializer)
    def post(self, request: Request, request_uuid: uuid_lib.UUID) -> Response:
        target = selectors.access_request_get_for_user(
            user=acting_user(request), request_uuid=request_uuid
        )
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.access_request_reject(
            actor=acting_user(request), request=target, reason=body.validated_data["reason"]
        )
        return _detail(request, target, HTTPStatus.OK)
