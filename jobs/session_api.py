"""REST API for interactive sessions: start one, list the caller's, read one, share it, and
list the apps. A session answers as its job does (render_job) plus where to open it; the app's
secret is never part of any answer."""

from __future__ import annotations

import uuid as uuid_lib
from http import HTTPStatus
from typing import Any, cast

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.selectors import can_manage_project, project_get_for_user
from jobs import selectors
from jobs.api import JobDetailSerializer, render_job
from jobs.exceptions import JobNotFound
from jobs.models import Job, Session, SessionApp
from jobs.selectors import resolve_target
from jobs.services.sessions import (
    idle_ceiling_minutes,
    project_idle_limit_set,
    project_idle_minutes,
    session_share,
    session_start,
)
from portal.api import StrictFieldsMixin


def _user(request: Request) -> User:
    return cast(User, request.user)


class SessionStartSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    """The body of POST sessions/ (types only; the service checks the rest)."""

    app = serializers.CharField(max_length=200)
    project = serializers.CharField(max_length=200)
    cluster = serializers.CharField(max_length=200)
    partition = serializers.CharField(allow_blank=True, required=False, max_length=200)
    gpus = serializers.IntegerField(required=False)
    gpu_type = serializers.CharField(allow_blank=True, required=False, max_length=200)
    cpus = serializers.IntegerField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    time_limit_minutes = serializers.IntegerField()
    port = serializers.IntegerField(required=False, allow_null=True)
    shared_with_managers = serializers.BooleanField(required=False)


class SessionAppSerializer(serializers.ModelSerializer[SessionApp]):
    class Meta:
        model = SessionApp
        fields = ["slug", "name", "description", "port"]


class SessionInfoSerializer(serializers.Serializer[Any]):
    app = serializers.CharField()
    url = serializers.CharField()
    shared_with_managers = serializers.BooleanField()
    ready = serializers.BooleanField(help_text="its app answers through the proxy")


class SessionSerializer(JobDetailSerializer):
    """A session as the API answers it (render_session): its job, plus `session`."""

    session = SessionInfoSerializer(read_only=True)

    class Meta(JobDetailSerializer.Meta):
        fields = [*JobDetailSerializer.Meta.fields, "session"]


def render_session(job: Job, session: Session) -> dict[str, Any]:
    """The job as the jobs API shows it, plus the session's app and where to open it."""
    data = render_job(job)
    data["session"] = {
        "app": session.app.slug,
        "url": f"/sessions/{job.uuid}/",
        "shared_with_managers": session.shared_with_managers,
        "ready": job.state == Job.State.RUNNING and bool(session.upstream),
    }
    return data


def _session_for(user: User, job_uuid: uuid_lib.UUID) -> tuple[Job, Session]:
    """A session of the caller's projects (404 otherwise, as for jobs)."""
    job = selectors.job_get_for_user(user=user, job_uuid=job_uuid)
    session = Session.objects.select_related("app").filter(job=job).first()
    if session is None:
        raise JobNotFound("No such session")
    return job, session


class SessionAppListView(APIView):
    @extend_schema(responses=SessionAppSerializer(many=True))
    def get(self, request: Request) -> Response:
        apps = SessionApp.objects.filter(enabled=True)
        return Response(SessionAppSerializer(apps, many=True).data)


class SessionListView(APIView):
    """GET: the caller's own sessions, newest first. POST: start one."""

    @extend_schema(
        operation_id="v1_sessions_list",
        responses=inline_serializer("SessionList", {"results": SessionSerializer(many=True)}),
    )
    def get(self, request: Request) -> Response:
        jobs = (
            selectors.job_visible_to(user=_user(request))
            .filter(kind=Job.Kind.SESSION, user=_user(request))
            .select_related("session__app", "project", "cluster", "user", "hold")
            .order_by("-created_at", "-id")[:100]
        )
        return Response({"results": [render_session(job, job.session) for job in jobs]})

    @extend_schema(
        request=SessionStartSerializer,
        responses={201: SessionSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER)],
    )
    def post(self, request: Request) -> Response:
        serializer = SessionStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        user = _user(request)
        data["project"], data["cluster"] = resolve_target(user, data["project"], data["cluster"])
        key = request.headers.get("Idempotency-Key", "").strip()
        job = session_start(user=user, idempotency_key=key, **data)
        replay = not hasattr(job, "submit_events")
        if replay:
            job = selectors.job_get_for_user(user=user, job_uuid=job.uuid)
        session = Session.objects.select_related("app").get(job=job)
        status = HTTPStatus.OK if replay else HTTPStatus.CREATED
        return Response(render_session(job, session), status=status)


class SessionDetailView(APIView):
    @extend_schema(responses=SessionSerializer)
    def get(self, request: Request, job_uuid: uuid_lib.UUID) -> Response:
        job, session = _session_for(_user(request), job_uuid)
        return Response(render_session(job, session))


class SessionShareSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    shared = serializers.BooleanField()


class SessionShareView(APIView):
    """POST {"shared": true|false}: the owner lets the project's managers open it (or not)."""

    @extend_schema(
        request=SessionShareSerializer,
        responses=SessionSerializer,
    )
    def post(self, request: Request, job_uuid: uuid_lib.UUID) -> Response:
        job, session = _session_for(_user(request), job_uuid)
        serializer = SessionShareSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        shared = serializer.validated_data["shared"]
        session = session_share(user=_user(request), session=session, shared=shared)
        return Response(render_session(job, session))


class ProjectSessionSettingsSerializer(serializers.Serializer[Any]):
    idle_minutes = serializers.IntegerField(
        help_text="minutes a session may sit idle before it is stopped (each cluster's "
        "max_session_idle_minutes still caps it there)"
    )
    max_idle_minutes = serializers.IntegerField(read_only=True)
    can_manage = serializers.BooleanField(read_only=True)


class ProjectSessionSettingsUpdateSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    idle_minutes = serializers.IntegerField()


def render_session_settings(user: User, project: Any) -> dict[str, Any]:
    return {
        "idle_minutes": project_idle_minutes(project=project),
        "max_idle_minutes": idle_ceiling_minutes(),
        "can_manage": can_manage_project(user, project),
    }


class ProjectSessionSettingsView(APIView):
    """GET: the project's session idle limit (members). PUT {"idle_minutes": n}: its managers
    set it; above the maximum → 400 naming idle_minutes, nothing saved."""

    @extend_schema(responses=ProjectSessionSettingsSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        project = project_get_for_user(_user(request), uuid)
        return Response(render_session_settings(_user(request), project))

    @extend_schema(
        request=ProjectSessionSettingsUpdateSerializer,
        responses=ProjectSessionSettingsSerializer,
    )
    def put(self, request: Request, uuid: str) -> Response:
        project = project_get_for_user(_user(request), uuid)
        serializer = ProjectSessionSettingsUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project_idle_limit_set(
            actor=_user(request),
            project=project,
            idle_minutes=serializer.validated_data["idle_minutes"],
        )
        return Response(render_session_settings(_user(request), project))
