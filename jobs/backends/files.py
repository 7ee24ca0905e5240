"""A job's result files in a directory the portal host can read (local and Kubernetes
backends): never read past that directory, whatever links or special files the job left."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from typing import BinaryIO

from jobs.backends.base import BackendError, ResultFile

# O_NONBLOCK: opening a FIFO the job left would otherwise wait for a writer forever.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def list_result_files(
    base: str | os.PathLike[str], *, limit: int | None = None
) -> list[ResultFile]:
    """Regular files under `base`, sorted, as POSIX paths relative to it (at most `limit`).

    Links count only when they resolve inside `base`; linked directories are not entered.
    A missing `base` has no files.
    """
    root = os.path.realpath(base)
    files: list[ResultFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full)
            if not real.startswith(root + os.sep):
                continue  # a link pointing out of the directory
            try:
                info = os.stat(real)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            files.append(
                ResultFile(
                    path=os.path.relpath(full, root).replace(os.sep, "/"),
                    size=info.st_size,
                    modified=datetime.fromtimestamp(info.st_mtime, tz=UTC),
                )
            )
            if limit is not None and len(files) >= limit:
                return files
    return files


def open_result_file(base: str | os.PathLike[str], path: str) -> BinaryIO:
    """Open the regular file `path` (relative) under `base` for reading.

    BackendError when `path` is empty, absolute, holds NUL or `..`, or leads out of `base`
    (through a link too); FileNotFoundError when there is no regular file there.
    """
    if not path or "\x00" in path or os.path.isabs(path) or ".." in path.split("/"):
        raise BackendError(f"Refused result path {path!r}: not inside the output directory")
    root = os.path.realpath(base)
    target = os.path.realpath(os.path.join(root, path))
    if not target.startswith(root + os.sep):
        raise BackendError(f"Refused result path {path!r}: it leads out of the output directory")
    fd = os.open(target, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
