"""REST API of project storage: /api/v1/projects/{uuid}/files/... (thin: parse, call one
service, render). Every endpoint answers 404 to anyone outside the project."""

from __future__ import annotations

import os
from http import HTTPStatus
from typing import Any, cast

from django.http import FileResponse, HttpRequest, QueryDict
from django.utils.datastructures import MultiValueDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from accounts.models import User
from jobs.storage import fs, paging, selectors, services, uploads
from jobs.storage.usage import usage_row
from portal.api import StrictFieldsMixin

CLUSTER_PARAM = OpenApiParameter(
    "cluster", str, description="The cluster's name (optional when the project has one)"
)
PATH_PARAM = OpenApiParameter("path", str, description="A path inside the project folder")


def _user(request: Request) -> User:
    return cast(User, request.user)


class EntrySerializer(serializers.Serializer[fs.Entry]):
    name = serializers.CharField()
    path = serializers.CharField()
    kind = serializers.ChoiceField(choices=["file", "directory", "link", "other"])
    size = serializers.IntegerField()
    modified = serializers.DateTimeField()


class FolderSerializer(serializers.Serializer[Any]):
    project = serializers.UUIDField()
    cluster = serializers.CharField()
    clusters = serializers.ListField(child=serializers.CharField())
    path = serializers.CharField(allow_blank=True)
    quota_bytes = serializers.IntegerField()
    usage_bytes = serializers.IntegerField()
    max_upload_bytes = serializers.IntegerField()
    entries = EntrySerializer(many=True)
    next = serializers.URLField(
        allow_null=True, help_text="The next page of entries (by name), or null: the last page."
    )
    previous = serializers.URLField(allow_null=True, help_text="The page before, or null.")
    usage_counted_at = serializers.DateTimeField(
        help_text="When the folder was last measured on disk: usage_bytes adds the portal's "
        "writes and deletes since, not what jobs wrote (recounted hourly)."
    )


class PathRequestSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    cluster = serializers.CharField(required=False, allow_blank=True, max_length=64)
    path = serializers.CharField(max_length=20_000, trim_whitespace=False)


class RenameRequestSerializer(PathRequestSerializer):
    new_path = serializers.CharField(max_length=20_000, trim_whitespace=False)


class DeleteRequestSerializer(PathRequestSerializer):
    recursive = serializers.BooleanField(default=False)


class CopyResultsRequestSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    cluster = serializers.CharField(required=False, allow_blank=True, max_length=64)
    job = serializers.UUIDField()
    path = serializers.CharField(
        required=False, allow_blank=True, max_length=20_000, trim_whitespace=False
    )


class CopyResultsSerializer(serializers.Serializer[Any]):
    copied = EntrySerializer(many=True)


@extend_schema_field(OpenApiTypes.BINARY)
class _BinaryField(serializers.FileField):
    """A file's bytes in a multipart part (documented as binary, not a URL)."""


class UploadRequestSerializer(serializers.Serializer[Any]):
    file = _BinaryField()


def _entry(entry: fs.Entry) -> dict[str, Any]:
    return EntrySerializer(entry).data


def _folder(request: Request, uuid: str, cluster: str | None) -> services.Folder:
    project = selectors.storage_project_for_user(user=_user(request), project_uuid=uuid)
    return services.storage_folder(user=_user(request), project=project, cluster=cluster or None)


def _valid(serializer_class: type[serializers.Serializer[Any]], request: Request) -> Any:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


PAGE_PARAMS = [
    OpenApiParameter(
        "page_size",
        int,
        description=f"Entries per page, 1 to {paging.MAX_PAGE_SIZE} "
        f"(default {paging.API_PAGE_SIZE})",
    ),
    OpenApiParameter("cursor", str, description="The page to show: from a next or previous link"),
]


def _page_link(request: Request, cursor: str | None) -> str | None:
    return replace_query_param(request.build_absolute_uri(), "cursor", cursor) if cursor else None


class FileListView(APIView):
    @extend_schema(
        parameters=[CLUSTER_PARAM, PATH_PARAM, *PAGE_PARAMS],
        responses=FolderSerializer,
        summary="List a folder of the project's storage by name, a page at a time (next and "
        "previous links), with the quota and its usage",
    )
    def get(self, request: Request, uuid: str) -> Response:
        folder = _folder(request, uuid, request.query_params.get("cluster"))
        page_size = paging.page_size_parse(request.query_params.get("page_size"))
        listing = services.storage_list(
            user=_user(request),
            folder=folder,
            path=request.query_params.get("path", ""),
            cursor=request.query_params.get("cursor", ""),
            page_size=page_size,
        )
        clusters = selectors.storage_clusters(project=folder.project)
        usage = usage_row(folder=folder)
        return Response(
            {
                "project": str(folder.project.uuid),
                "cluster": folder.cluster.name,
                "clusters": [c.name for c in clusters],
                "path": listing.path,
                "quota_bytes": selectors.storage_quota_bytes(project=folder.project),
                "usage_bytes": usage.used_bytes,
                "max_upload_bytes": services.max_upload_bytes(),
                "entries": [_entry(e) for e in listing.entries],
                # (added since: after the keys clients already read)
                "next": _page_link(request, listing.next_cursor),
                "previous": _page_link(request, listing.previous_cursor),
                "usage_counted_at": serializers.DateTimeField().to_representation(usage.counted_at),
            }
        )


class FileDownloadView(APIView):
    @extend_schema(
        parameters=[CLUSTER_PARAM, PATH_PARAM],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
        summary="Download one file of the project's storage (streamed)",
    )
    def get(self, request: Request, uuid: str) -> FileResponse:
        folder = _folder(request, uuid, request.query_params.get("cluster"))
        path = request.query_params.get("path", "")
        handle, entry = services.storage_open(user=_user(request), folder=folder, path=path)
        return FileResponse(
            handle,
            as_attachment=True,
            filename=os.path.basename(entry.path),
            content_type="application/octet-stream",
        )


class FileUploadView(APIView):
    """The body is read by this view only (streamed to the project folder), once the caller is
    known to be a member: request.POST is preset empty so that neither the NUL-character
    middleware nor the CSRF check (which takes the token from the X-CSRFToken header) parses
    it first."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        view.streams_body = True  # type: ignore[attr-defined]  # (portal.middleware skips it)
        return view

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        drf_request = super().initialize_request(request, *args, **kwargs)
        if request.method == "POST":
            # Django's and DRF's views of the form both empty: the body stays unread.
            request._post = QueryDict()  # type: ignore[attr-defined]
            request._files = MultiValueDict()  # type: ignore[attr-defined]
            setattr(drf_request, "_data", QueryDict())  # noqa: B010 (DRF's private cache)
            setattr(drf_request, "_full_data", drf_request._data)  # type: ignore[attr-defined]  # noqa: B010
            setattr(drf_request, "_files", MultiValueDict())  # noqa: B010
        return drf_request

    @extend_schema(
        parameters=[
            CLUSTER_PARAM,
            OpenApiParameter("path", str, description="The folder to upload into (default: top)"),
        ],
        request={"multipart/form-data": UploadRequestSerializer},
        responses={HTTPStatus.CREATED: EntrySerializer},
        summary="Upload one file (multipart part 'file'), streamed to disk; 413 beyond the "
        "per-file limit or the project's quota",
    )
    def post(self, request: Request, uuid: str) -> Response:
        folder = _folder(request, uuid, request.query_params.get("cluster"))
        directory = request.query_params.get("path", "")
        parts = services.path_parts(directory, allow_root=True)
        entry = uploads.receive(request=request._request, folder=folder, directory="/".join(parts))
        return Response(_entry(entry), status=HTTPStatus.CREATED)


# A POST naming the folder (and a path in it) in its body: the body is checked with `body`, the
# caller's folder found, then `act` runs one service and gives the answer. (A comment, not a
# docstring: the schema would show a docstring as each operation's description.)
class _FolderAction(APIView):
    body: type[serializers.Serializer[Any]]
    status = HTTPStatus.OK

    def act(self, user: User, folder: services.Folder, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def post(self, request: Request, uuid: str) -> Response:
        data = _valid(self.body, request)
        folder = _folder(request, uuid, data.get("cluster"))
        return Response(self.act(_user(request), folder, data), status=self.status)


@extend_schema_view(
    post=extend_schema(
        request=PathRequestSerializer,
        responses={HTTPStatus.CREATED: EntrySerializer},
        summary="Make a folder",
    )
)
class FileMkdirView(_FolderAction):
    body = PathRequestSerializer
    status = HTTPStatus.CREATED

    def act(self, user: User, folder: services.Folder, data: dict[str, Any]) -> Any:
        return _entry(services.storage_mkdir(user=user, folder=folder, path=data["path"]))


@extend_schema_view(
    post=extend_schema(
        request=RenameRequestSerializer,
        responses=EntrySerializer,
        summary="Rename or move a file or folder",
    )
)
class FileRenameView(_FolderAction):
    body = RenameRequestSerializer

    def act(self, user: User, folder: services.Folder, data: dict[str, Any]) -> Any:
        path, new_path = data["path"], data["new_path"]
        return _entry(
            services.storage_rename(user=user, folder=folder, path=path, new_path=new_path)
        )


@extend_schema_view(
    post=extend_schema(
        request=DeleteRequestSerializer,
        responses={HTTPStatus.NO_CONTENT: None},
        summary="Delete a file, or a folder (with everything in it when recursive)",
    )
)
class FileDeleteView(_FolderAction):
    body = DeleteRequestSerializer
    status = HTTPStatus.NO_CONTENT

    def act(self, user: User, folder: services.Folder, data: dict[str, Any]) -> Any:
        path, recursive = data["path"], data["recursive"]
        services.storage_delete(user=user, folder=folder, path=path, recursive=recursive)


@extend_schema_view(
    post=extend_schema(
        request=CopyResultsRequestSerializer,
        responses={HTTPStatus.CREATED: CopyResultsSerializer},
        summary="Copy a job's result files into the project's storage",
    )
)
class FileCopyResultsView(_FolderAction):
    body = CopyResultsRequestSerializer
    status = HTTPStatus.CREATED

    def act(self, user: User, folder: services.Folder, data: dict[str, Any]) -> Any:
        job, path = data["job"], data.get("path") or ""
        copied = services.storage_copy_results(user=user, folder=folder, job_uuid=job, path=path)
        return {"copied": [_entry(e) for e in copied]}
