"""Project storage: one folder per project on each cluster's shared filesystem, browsed,
uploaded to (streamed, with a per-file limit and the project's byte quota), downloaded from,
and filled with a job's results. Every file operation is confined (jobs.storage.fs)."""

from __future__ import annotations

import re
import uuid as uuid_lib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import BinaryIO

from django.conf import settings
from django.db import transaction

from accounts.models import Project, User
from jobs.backends import get_backend
from jobs.backends.files import PathRefused
from jobs.models import Job
from jobs.selectors import job_get_for_user
from jobs.services.account_names import qualified_project
from jobs.services.files import job_open_result, job_results
from jobs.storage import fs, paging
from jobs.storage.exceptions import (
    FileTooLarge,
    InvalidPath,
    InvalidStorageQuota,
    NoProjectStorage,
    StorageNotFound,
    StorageQuotaExceeded,
)
from jobs.storage.models import ProjectStorage, ProjectStorageUsage
from jobs.storage.selectors import storage_clusters, storage_quota_bytes
from jobs.storage.usage import storage_recount, usage_change, usage_locked, usage_row
from quotas.models import Cluster
from quotas.policy import is_facility_admin


@dataclass(frozen=True)
class Folder:
    """A project's folder on one cluster, as the portal host reaches it."""

    project: Project
    cluster: Cluster
    root: str


def path_parts(path: str, *, allow_root: bool = False) -> list[str]:
    """The components of a path inside the folder; InvalidPath naming it otherwise."""
    try:
        return fs.clean_path(path, allow_root=allow_root)
    except fs.BadPath as exc:
        raise InvalidPath(str(exc), field="path", path=path[:200]) from None


def _fs_errors(path: str, exc: OSError | fs.BadPath | PathRefused) -> Exception:
    """A clear domain error for a failed file operation on `path`."""
    if isinstance(exc, fs.BadPath):
        message = str(exc)
        if path not in message:  # (the refusal named a folder on the way)
            message = f"Path {path!r} is refused: {message}"
        return InvalidPath(message, field="path", path=path[:200])
    if isinstance(exc, PathRefused):
        return InvalidPath(f"Path {path!r} is refused: {exc}", field="path", path=path[:200])
    if isinstance(exc, FileNotFoundError):
        return StorageNotFound(f"No such file or folder: {path!r}")
    if isinstance(exc, NotADirectoryError):
        return InvalidPath(f"Path {path!r}: a component is not a folder", field="path")
    if isinstance(exc, IsADirectoryError):
        return InvalidPath(f"Path {path!r} is a folder", field="path", path=path[:200])
    return InvalidPath(f"Path {path!r}: {exc.strerror or exc}", field="path", path=path[:200])


def storage_folder(*, user: User, project: Project, cluster: str | None = None) -> Folder:
    """The project's folder on `cluster` (by name; optional when the project has storage on one
    cluster only), created when missing."""
    clusters = storage_clusters(project=project)
    if not clusters:
        raise NoProjectStorage(
            f"Project {project.name} has no storage: none of its clusters keeps project folders",
            field="cluster",
        )
    if cluster:
        chosen = next((c for c in clusters if c.name == cluster), None)
        if chosen is None:
            names = ", ".join(c.name for c in clusters)
            raise NoProjectStorage(
                f"Cluster {cluster!r} has no storage for this project (it has: {names})",
                field="cluster",
            )
    elif len(clusters) == 1:
        chosen = clusters[0]
    else:
        names = ", ".join(c.name for c in clusters)
        raise NoProjectStorage(f"Name the cluster: one of {names}", field="cluster")
    return storage_folder_on(project=project, cluster=chosen)


def storage_folder_on(*, project: Project, cluster: Cluster) -> Folder:
    """The project's folder on a cluster that keeps project folders, created when missing."""
    storage_root = get_backend(cluster).project_storage_root()
    if storage_root is None:  # (storage_clusters kept only clusters with one)
        raise NoProjectStorage(f"Cluster {cluster.name} keeps no project folders", field="cluster")
    try:
        root = fs.ensure_root(storage_root, qualified_project(project))
    except (OSError, PathRefused) as exc:
        raise NoProjectStorage(
            f"The project folder on {cluster.name} cannot be used: {exc}", field="cluster"
        ) from None
    return Folder(project=project, cluster=cluster, root=root)


def storage_usage(*, folder: Folder) -> int:
    """The bytes the folder holds, as kept (see jobs.storage.usage): no walk of the folder."""
    return usage_row(folder=folder).used_bytes


@dataclass(frozen=True)
class Listing:
    """One page of a folder, by name; the cursors of the pages around it (None: none)."""

    path: str
    entries: list[fs.Entry]
    next_cursor: str | None
    previous_cursor: str | None


def storage_list(
    *, user: User, folder: Folder, path: str = "", cursor: str = "", page_size: int
) -> Listing:
    """A page of `page_size` entries of a folder, from the start or where `cursor` says."""
    parts = path_parts(path, allow_root=True)
    position = paging.cursor_decode(cursor)
    try:
        page = fs.list_page(
            folder.root, parts, limit=page_size, after=position.after, before=position.before
        )
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None
    first, last = (page.entries[0].name, page.entries[-1].name) if page.entries else ("", "")
    return Listing(
        path="/".join(parts),
        entries=page.entries,
        next_cursor=paging.cursor_encode(after=last) if page.more_after and last else None,
        previous_cursor=paging.cursor_encode(before=first) if page.more_before and first else None,
    )


def storage_open(*, user: User, folder: Folder, path: str) -> tuple[BinaryIO, fs.Entry]:
    """A regular file of the folder, open for streaming, and its entry."""
    parts = path_parts(path)
    try:
        handle = fs.open_read(folder.root, parts)
        return handle, fs.stat_entry(folder.root, parts)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def storage_mkdir(*, user: User, folder: Folder, path: str) -> fs.Entry:
    parts = path_parts(path)
    try:
        fs.make_dir(folder.root, parts)
        return fs.stat_entry(folder.root, parts)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def storage_rename(*, user: User, folder: Folder, path: str, new_path: str) -> fs.Entry:
    source = path_parts(path)
    try:
        target = fs.clean_path(new_path)
    except fs.BadPath as exc:
        raise InvalidPath(str(exc), field="new_path", path=new_path[:200]) from None
    try:
        fs.open_dir_check(folder.root, source[:-1])
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None
    try:
        fs.rename(folder.root, source, target)
        return fs.stat_entry(folder.root, target)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(new_path, exc) from None


def storage_delete(*, user: User, folder: Folder, path: str, recursive: bool = False) -> None:
    """Delete a file or folder; the bytes freed leave the folder's usage in the same step."""
    parts = path_parts(path)
    try:
        with usage_locked(folder=folder) as row:
            usage_change(row=row, delta=-fs.delete(folder.root, parts, recursive=recursive))
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def max_upload_bytes() -> int:
    return int(settings.GPUC_STORAGE_MAX_UPLOAD_BYTES)


class Upload:
    """One file being written into a folder: a temporary file beside its target, checked
    against the per-file limit and the quota at every chunk, renamed into place by finish()
    after a last quota check under the lock of the folder's usage row, which it then adds its
    bytes to (jobs.storage.usage); discard() leaves nothing."""

    def __init__(self, *, folder: Folder, path: str, expected_size: int | None = None) -> None:
        self.folder = folder
        self.path = path
        self.parts = path_parts(path)
        self.limit = max_upload_bytes()
        self.quota = storage_quota_bytes(project=folder.project)
        if expected_size is not None:
            self._check(expected_size, usage=None)
        self.usage_at_start = storage_usage(folder=folder)
        try:
            self.temp = fs.TempFile(folder.root, self.parts)
        except (OSError, fs.BadPath) as exc:
            raise _fs_errors(path, exc) from None

    def _check(self, size: int, *, usage: int | None) -> None:
        if size > self.limit:
            raise FileTooLarge(
                f"{self.path!r} is larger than the limit of {self.limit} bytes per file",
                field="file",
                limit_bytes=self.limit,
            )
        if (usage or 0) + size > self.quota:
            raise StorageQuotaExceeded(
                f"Storing {self.path!r} would exceed the project's storage quota of "
                f"{self.quota} bytes ({usage or 0} bytes used): nothing was stored",
                field="file",
                quota_bytes=self.quota,
                usage_bytes=usage or 0,
            )

    def write(self, data: bytes) -> None:
        try:
            self._check(self.temp.size + len(data), usage=self.usage_at_start)
            self.temp.write(data)
        except BaseException:
            self.temp.discard()
            raise

    def finish(self) -> fs.Entry:
        try:
            # One finisher per folder at a time: the quota holds under concurrent uploads
            # (each is checked against what the others that finished first stored).
            with usage_locked(folder=self.folder) as row:
                self.quota = storage_quota_bytes(project=self.folder.project)
                try:
                    replaced = fs.stat_entry(self.folder.root, self.parts).size
                except (OSError, fs.BadPath):
                    replaced = 0
                self._check(self.temp.size, usage=row.used_bytes - replaced)
                self.temp.commit()
                usage_change(row=row, delta=self.temp.size - replaced)
            return fs.stat_entry(self.folder.root, self.parts)
        except (OSError, fs.BadPath) as exc:
            self.temp.discard()
            raise _fs_errors(self.path, exc) from None
        except BaseException:
            self.temp.discard()
            raise

    def discard(self) -> None:
        self.temp.discard()


def storage_write(
    *, user: User, folder: Folder, path: str, chunks: Iterable[bytes], size: int | None = None
) -> fs.Entry:
    """Write a file from an iterable of chunks (streamed; all or nothing)."""
    upload = Upload(folder=folder, path=path, expected_size=size)
    try:
        for chunk in chunks:
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    return upload.finish()


def storage_copy_results(
    *, user: User, folder: Folder, job_uuid: uuid_lib.UUID | str, path: str = ""
) -> list[fs.Entry]:
    """Copy every result file of one of the project's jobs into the folder (under `path`,
    default results/<job name>-<uuid prefix>/), making the folders on the way."""
    job: Job = job_get_for_user(user=user, job_uuid=job_uuid)
    if job.project_id != folder.project.id:
        raise StorageNotFound("No such job in this project")
    target = path or f"results/{job.name or 'job'}-{str(job.uuid)[:8]}"
    base = path_parts(target)
    results = job_results(user=user, job=job)
    copied = []
    for result in results:
        rel = fs.clean_path(result.path)
        _make_dirs(folder, [*base, *rel[:-1]])
        handle = job_open_result(user=user, job=job, path=result.path)
        copied.append(
            storage_write(
                user=user,
                folder=folder,
                path="/".join([*base, *rel]),
                chunks=fs.read_chunks(handle),
                size=result.size,
            )
        )
    return copied


def _make_dirs(folder: Folder, parts: Sequence[str]) -> None:
    for depth in range(1, len(parts) + 1):
        try:
            fs.make_dir(folder.root, parts[:depth])
        except fs.BadPath:
            entry = fs.stat_entry(folder.root, parts[:depth])
            if entry.kind != "directory":
                raise InvalidPath(
                    f"Path {'/'.join(parts[:depth])!r} exists and is not a folder", field="path"
                ) from None
        except OSError as exc:
            raise _fs_errors("/".join(parts[:depth]), exc) from None


# Sizes staff may type: bytes, or a number with a unit (binary: K/KiB = 1024; decimal: KB = 1000).
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGTP])(i?B)?|(B))?\s*$", re.IGNORECASE)
SIZE_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
MAX_QUOTA_BYTES = 2**60  # 1 EiB: far above any filesystem, far below the column's limit
SIZE_RULE = (
    "a size of 0 bytes or more: a number of bytes, or a number with a unit "
    "(500G or 500GiB = 500 × 1024³ bytes, 500GB = 500 × 1000³ bytes; K, M, G, T, P)"
)


def storage_quota_parse(text: str) -> int:
    """Bytes from what staff typed ("500G", "1.5 TiB", "2TB", "1048576"); InvalidStorageQuota
    naming the value and the rule otherwise."""
    match = SIZE_RE.match(text or "")
    if match is None:
        shown = (text or "").strip()[:40]
        why = f"{shown!r} is not a size" if shown else "the quota is empty"
        raise InvalidStorageQuota(f"The storage quota must be {SIZE_RULE}; {why}", field="quota")
    number, unit, suffix, _ = match.groups()
    amount = Decimal(number)
    if unit:
        base = 1000 if suffix and suffix.lower() == "b" else 1024
        amount *= base ** SIZE_POWERS[unit.upper()]
    return storage_quota_check(amount)


def storage_quota_check(amount: Decimal | int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        raise InvalidStorageQuota(f"The storage quota must be {SIZE_RULE}", field="quota")
    if amount != int(amount):
        shown = f"{Decimal(amount).normalize():f}"
        raise InvalidStorageQuota(
            f"The storage quota must be a whole number of bytes, not {shown}", field="quota"
        )
    if not 0 <= amount <= MAX_QUOTA_BYTES:
        raise InvalidStorageQuota(
            f"The storage quota must be from 0 bytes to 1 EiB ({MAX_QUOTA_BYTES} bytes), "
            f"not {int(amount)} bytes",
            field="quota",
        )
    return int(amount)


@transaction.atomic
def storage_quota_set(*, actor: User, project: Project, quota_bytes: int) -> ProjectStorage:
    """Facility staff set a project's byte quota (for its folder on each cluster). Anyone
    else is told there is no such project; a negative, fractional or absurd size is a 400."""
    if not is_facility_admin(actor):
        raise StorageNotFound("No such project")
    quota_bytes = storage_quota_check(quota_bytes)
    row, _ = ProjectStorage.objects.update_or_create(
        project=project, defaults={"quota_bytes": quota_bytes}
    )
    return row


def storage_recount_usage(*, usage_id: int) -> int | None:
    """Recount one folder's usage from disk (see jobs.storage.usage.storage_recount); None when
    its cluster no longer keeps project folders."""
    row = ProjectStorageUsage.objects.select_related("project", "cluster").get(pk=usage_id)
    try:
        folder = storage_folder_on(project=row.project, cluster=row.cluster)
    except NoProjectStorage:
        return None
    return storage_recount(folder=folder).used_bytes
