"""Errors of project storage; the API exception handler turns them into {"detail", "code"}."""

from __future__ import annotations

from http import HTTPStatus

from portal.errors import DomainError, NotFound


class InvalidPath(DomainError):
    """A path that is not a plain path inside the project folder (the detail names it)."""

    code = "invalid_path"


class InvalidUpload(DomainError):
    """An upload without a file or a name, or a body cut off before its end."""

    code = "invalid_upload"


class FileTooLarge(DomainError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "file_too_large"


class StorageQuotaExceeded(DomainError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "storage_quota_exceeded"


class StorageNotFound(NotFound):
    code = "not_found"


class NoProjectStorage(DomainError):
    """The cluster keeps no project folders (or none the portal can reach)."""

    code = "no_project_storage"
