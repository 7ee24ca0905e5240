"""Project storage: one folder per project on each cluster's shared filesystem, browsed,
uploaded to (streamed, with a per-file limit and the project's byte quota), downloaded from,
and filled with a job's results. Every file operation is confined (jobs.storage.fs)."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
from jobs.storage import fs
from jobs.storage.exceptions import (
    FileTooLarge,
    InvalidPath,
    NoProjectStorage,
    StorageNotFound,
    StorageQuotaExceeded,
)
from jobs.storage.models import ProjectStorage
from jobs.storage.selectors import storage_clusters, storage_quota_bytes
from quotas.models import Cluster


@dataclass(frozen=True)
class Folder:
    """A project's folder on one cluster, as the portal host reaches it."""

    project: Project
    cluster: Cluster
    root: str


def _parts(path: str, *, allow_root: bool = False) -> list[str]:
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
    storage_root = get_backend(chosen).project_storage_root()
    if storage_root is None:  # (storage_clusters kept only clusters with one)
        raise NoProjectStorage(f"Cluster {chosen.name} keeps no project folders", field="cluster")
    try:
        root = fs.ensure_root(storage_root, qualified_project(project))
    except (OSError, PathRefused) as exc:
        raise NoProjectStorage(
            f"The project folder on {chosen.name} cannot be used: {exc}", field="cluster"
        ) from None
    return Folder(project=project, cluster=chosen, root=root)


def storage_usage(*, folder: Folder) -> int:
    return fs.usage(folder.root)


def storage_list(*, user: User, folder: Folder, path: str = "") -> list[fs.Entry]:
    parts = _parts(path, allow_root=True)
    try:
        return fs.list_dir(folder.root, parts)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def storage_open(*, user: User, folder: Folder, path: str) -> tuple[BinaryIO, fs.Entry]:
    """A regular file of the folder, open for streaming, and its entry."""
    parts = _parts(path)
    try:
        handle = fs.open_read(folder.root, parts)
        return handle, fs.stat_entry(folder.root, parts)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def storage_mkdir(*, user: User, folder: Folder, path: str) -> fs.Entry:
    parts = _parts(path)
    try:
        fs.make_dir(folder.root, parts)
        return fs.stat_entry(folder.root, parts)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def storage_rename(*, user: User, folder: Folder, path: str, new_path: str) -> fs.Entry:
    source = _parts(path)
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
    parts = _parts(path)
    try:
        fs.delete(folder.root, parts, recursive=recursive)
    except (OSError, fs.BadPath) as exc:
        raise _fs_errors(path, exc) from None


def max_upload_bytes() -> int:
    return int(settings.GPUC_STORAGE_MAX_UPLOAD_BYTES)


class Upload:
    """One file being written into a folder: a temporary file beside its target, checked
    against the per-file limit and the quota at every chunk, renamed into place by finish()
    after a last quota check under the project's storage lock; discard() leaves nothing."""

    def __init__(self, *, folder: Folder, path: str, expected_size: int | None = None) -> None:
        self.folder = folder
        self.path = path
        self.parts = _parts(path)
        self.limit = max_upload_bytes()
        self.quota = storage_quota_bytes(project=folder.project)
        if expected_size is not None:
            self._check(expected_size, usage=None)
        self.usage_at_start = fs.usage(folder.root)
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
            with transaction.atomic():
                # One finisher per project at a time: the quota holds under concurrent uploads
                # (the walk counts every upload in progress, this one included).
                Project.objects.select_for_update().filter(pk=self.folder.project.pk).first()
                self.quota = storage_quota_bytes(project=self.folder.project)
                used = fs.usage(self.folder.root)
                try:
                    replaced = fs.stat_entry(self.folder.root, self.parts).size
                except (OSError, fs.BadPath):
                    replaced = 0
                self._check(self.temp.size, usage=used - self.temp.size - replaced)
                self.temp.commit()
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
    base = _parts(target)
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


@transaction.atomic
def storage_quota_set(*, actor: User, project: Project, quota_bytes: int) -> ProjectStorage:
    """Staff set a project's byte quota (per cluster folder)."""
    if not actor.is_staff:
        raise StorageNotFound("No such project")
    if isinstance(quota_bytes, bool) or not isinstance(quota_bytes, int) or quota_bytes < 0:
        raise InvalidPath("quota_bytes must be a whole number of bytes, 0 or more", field="quota")
    row, _ = ProjectStorage.objects.update_or_create(
        project=project, defaults={"quota_bytes": quota_bytes}
    )
    return row
