"""Errors of project storage; the API exception handler turns them into {"detail", "code"}."""

from __future__ import annotations

from portal.errors import DomainError, NotFound, TooLarge


class InvalidPath(DomainError):
    """A path that is not a plain path inside the project folder (the detail names it)."""

    code = "invalid_path"


class InvalidUpload(DomainError):
    """An upload without a file or a name, or a body cut off before its end."""

    code = "invalid_upload"


class FileTooLarge(TooLarge):
    code = "file_too_large"


class StorageQuotaExceeded(TooLarge):
    code = "storage_quota_exceeded"


class StorageNotFound(NotFound):
    """No such project (to the caller), job, file or folder."""


class NoProjectStorage(DomainError):
    """The cluster keeps no project folders (or none the portal can reach)."""

    code = "no_project_storage"


class InvalidPage(DomainError):
    """A listing's page_size or cursor that is not one it takes (the detail says which)."""

    code = "invalid"


class InvalidStorageQuota(DomainError):
    """A storage quota that is not a size of 0 bytes or more (the detail says what is)."""

    code = "invalid_storage_quota"
