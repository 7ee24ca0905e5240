"""Reading a job's files (logs, results, records) without trusting the job: every backend
that reads files the job could touch (local, Slurm's shared filesystem, Kubernetes' results
folder) goes through here.

The job owns its directory and could plant symbolic links (to /etc/shadow, to another job's
results, its whole output folder to /) or FIFOs. Every path is therefore opened one component
at a time from a trusted base directory with O_NOFOLLOW (a symlink anywhere, the job's own
folder included, is refused, not followed), files with O_NONBLOCK (a FIFO cannot hang the
portal) and only regular files are read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import BinaryIO

from jobs.backends.base import BackendError, LogChunk, ResultFile

MAX_RESULTS = 10_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class PathRefused(BackendError):
    """The path leads out of the job's directory (a symlink or a non-regular file)."""


def _refuse_links(exc: OSError, path: str) -> None:
    # O_NOFOLLOW on a symlink fails with ELOOP (O_DIRECTORY on one may say ENOTDIR instead).
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        raise PathRefused(f"{path}: symbolic links are not followed") from None


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(base: str | os.PathLike[str], parts: Sequence[str]) -> int:
    """A directory fd for base/parts[0]/parts[1]/..., refusing symlinks in parts."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\x00" in part:
                raise PathRefused(f"invalid path component {part!r}")
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                _refuse_links(exc, part)
                if exc.errno == errno.ENOTDIR and _is_link(part, fd):
                    raise PathRefused(f"{part}: symbolic links are not followed") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file(base: str | os.PathLike[str], parts: Sequence[str]) -> BinaryIO:
    """A regular file base/parts..., opened for reading without following any symlink."""
    if not parts:
        raise IsADirectoryError(os.fspath(base))
    dir_fd = open_dir(base, parts[:-1])
    name = parts[-1]
    try:
        if name in ("", ".", "..") or "/" in name or "\x00" in name:
            raise PathRefused(f"invalid file name {name!r}")
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            _refuse_links(exc, name)
            raise
    finally:
        os.close(dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(name)
        raise PathRefused(f"{name} is not a regular file")
    return os.fdopen(fd, "rb")


def read_chunk(
    base: str | os.PathLike[str], parts: Sequence[str], offset: int, limit: int
) -> LogChunk:
    """Up to `limit` bytes from `offset` (negative: from the end); a missing file is empty."""
    try:
        handle = open_file(base, parts)
    except FileNotFoundError:
        return LogChunk(data=b"", next_offset=0, eof=True)
    with handle:
        size = os.fstat(handle.fileno()).st_size
        start = max(0, size + offset) if offset < 0 else offset
        if start > size:
            return LogChunk(data=b"", next_offset=size, eof=True)
        handle.seek(start)
        data = handle.read(min(limit, size - start))
    end = start + len(data)
    return LogChunk(data=data, next_offset=end, eof=end >= size)


def list_files(
    base: str | os.PathLike[str], parts: Sequence[str], *, limit: int = MAX_RESULTS
) -> list[ResultFile]:
    """Regular files under base/parts (relative paths, sorted), never through a symlink.
    A missing folder has no files; PathRefused when a component of base/parts is a link."""
    try:
        top = open_dir(base, parts)
    except (FileNotFoundError, NotADirectoryError):
        return []
    files: list[ResultFile] = []
    try:
        for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                try:
                    info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                rel = os.path.normpath(os.path.join(dirpath, name))
                files.append(
                    ResultFile(
                        path=rel.replace(os.sep, "/"),
                        size=info.st_size,
                        modified=datetime.fromtimestamp(info.st_mtime, tz=UTC),
                    )
                )
                if len(files) >= limit:
                    return files
    finally:
        os.close(top)
    return files


def result_parts(path: str) -> list[str]:
    """The components of a result path relative to the output folder, or PathRefused when it is
    empty, absolute, holds NUL or `..`."""
    if not path or "\x00" in path or os.path.isabs(path) or ".." in path.split("/"):
        raise PathRefused(f"Refused result path {path!r}: not inside the output directory")
    return [part for part in path.split("/") if part not in ("", ".")]
