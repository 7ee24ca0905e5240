"""Confined file operations inside one project folder.

A job can write anything into its project's folder: symbolic links (to /etc, to another
project), FIFOs, device nodes (where it may). Every operation therefore walks from the project
folder one component at a time with O_NOFOLLOW (jobs.backends.files.open_dir) and acts through
directory file descriptors (`dir_fd=`, `follow_symlinks=False`): a link is never followed,
whatever a string check says. Paths are checked first (clean_path) so that a refusal names the
path the caller gave.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from jobs.backends import files
from jobs.backends.files import PathRefused

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
TEMP_PREFIX = ".gpuc-upload-"  # uploads in progress: hidden, never a user's name
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
DIR_MODE = 0o755
FILE_MODE = 0o644


class BadPath(ValueError):
    """The path is not a plain relative path inside the project folder; the message names it."""


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # relative to the project folder, "/"-separated
    kind: str  # "file" | "directory" | "link" | "other"
    size: int
    modified: datetime


def clean_path(path: str, *, allow_root: bool = False) -> list[str]:
    """The components of a relative path inside the project folder, or BadPath naming it:
    no absolute paths, no `..`, no control characters, no backslashes, names within limits."""
    if not isinstance(path, str):
        raise BadPath("path must be a string")
    shown = path if len(path) <= 200 else path[:200] + "…"
    if len(path) > MAX_PATH_CHARS:
        raise BadPath(f"Path {shown!r} is longer than {MAX_PATH_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0 for c in path):
        raise BadPath(f"Path {shown!r} contains control characters")
    if path.startswith("/") or path.startswith("~") or (len(path) > 1 and path[1] == ":"):
        raise BadPath(f"Path {shown!r} is absolute: give a path inside the project folder")
    if "\\" in path:
        raise BadPath(f"Path {shown!r} contains a backslash")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise BadPath(f"Path {shown!r} contains '..': it must stay inside the project folder")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise BadPath(f"Path {shown!r} has a name longer than {MAX_NAME_BYTES} bytes")
        if part.startswith(TEMP_PREFIX):
            raise BadPath(f"Path {shown!r}: names starting with {TEMP_PREFIX} are reserved")
    if not parts and not allow_root:
        raise BadPath(f"Path {shown!r} names the project folder itself, not a file in it")
    return parts


def _shown(parts: Sequence[str]) -> str:
    return "/".join(parts) or "/"


def ensure_root(storage_root: str, project: str) -> str:
    """The project's folder under storage_root, created when missing; refused when it (or
    `projects/` itself) is a link."""
    os.makedirs(storage_root, mode=0o711, exist_ok=True)
    fd = os.open(storage_root, _DIR_OPEN)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(project, DIR_MODE, dir_fd=fd)
        info = os.stat(project, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            raise PathRefused(f"the project folder {project} is not a folder")
    finally:
        os.close(fd)
    return os.path.join(storage_root, project)


def _split(root: str) -> tuple[str, list[str]]:
    """The project folder as (the folder of all projects, [its name]): the project's own folder
    is then opened with O_NOFOLLOW too (a job swapping it for a link is refused)."""
    parent, name = os.path.split(root.rstrip("/"))
    return parent, [name]


def _open_dir(root: str, parts: Sequence[str]) -> int:
    """A directory fd for root/parts, never through a link: BadPath names what went wrong."""
    parent, top = _split(root)
    try:
        return files.open_dir(parent, [*top, *parts])
    except PathRefused as exc:
        raise BadPath(f"Path {_shown(parts)!r} is refused: {exc}") from None
    except NotADirectoryError:
        raise BadPath(f"Path {_shown(parts)!r}: a component is not a folder") from None


def open_dir_check(root: str, parts: Sequence[str]) -> None:
    """BadPath (or OSError) when root/parts is not a folder reached without a link."""
    os.close(_open_dir(root, parts))


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _entry(fd: int, parts: Sequence[str], name: str) -> Entry:
    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    kind = _kind(info.st_mode)
    return Entry(
        name=name,
        path="/".join([*parts, name]),
        kind=kind,
        size=info.st_size if kind == "file" else 0,
        modified=datetime.fromtimestamp(info.st_mtime, tz=UTC),
    )


def list_dir(root: str, parts: Sequence[str]) -> list[Entry]:
    """The folder's entries (links and special files shown as such, never followed)."""
    return list_page(root, parts, limit=None).entries


@dataclass(frozen=True)
class Page:
    """Entries of a folder by name, and whether names come before or after them."""

    entries: list[Entry]
    more_before: bool
    more_after: bool


def list_page(
    root: str,
    parts: Sequence[str],
    *,
    limit: int | None,
    after: str | None = None,
    before: str | None = None,
) -> Page:
    """Up to `limit` entries by name (code point order): the first ones after the name `after`,
    or the last ones before the name `before`. Only the entries shown are stat()ed, so a page
    of a folder of 100,000 files costs one directory read and a sort, not 100,000 stats."""
    fd = _open_dir(root, parts)
    try:
        names = sorted(n for n in os.listdir(fd) if not n.startswith(TEMP_PREFIX))
        start = bisect.bisect_right(names, after) if after is not None else 0
        stop = bisect.bisect_left(names, before) if before is not None else len(names)
        # Backwards for a page before a name: its last entries are the ones next to it.
        window = names[start:stop] if before is None else names[start:stop][::-1]
        entries: list[Entry] = []
        taken = 0
        for name in window:
            if limit is not None and len(entries) == limit:
                break
            taken += 1
            with contextlib.suppress(FileNotFoundError):  # (deleted since the listing)
                entries.append(_entry(fd, parts, name))
    finally:
        os.close(fd)
    rest = taken < len(window)
    if before is not None:
        return Page(entries[::-1], more_before=rest, more_after=stop < len(names))
    return Page(entries, more_before=start > 0, more_after=rest)


def stat_entry(root: str, parts: Sequence[str]) -> Entry:
    fd = _open_dir(root, parts[:-1])
    try:
        return _entry(fd, parts[:-1], parts[-1])
    finally:
        os.close(fd)


def open_read(root: str, parts: Sequence[str]) -> BinaryIO:
    """A regular file for reading: links, FIFOs and devices are refused (BadPath)."""
    parent, top = _split(root)
    if not parts:
        raise IsADirectoryError(root)
    try:
        return files.open_file(parent, [*top, *parts])
    except PathRefused as exc:
        raise BadPath(f"Path {_shown(parts)!r} is refused: {exc}") from None
    except NotADirectoryError:
        raise BadPath(f"Path {_shown(parts)!r}: a component is not a folder") from None


def usage(root: str) -> int:
    """Bytes held by regular files under the project folder (uploads in progress left out),
    counted without following any link: a walk of the whole folder."""
    total = 0
    fd = _open_dir(root, [])
    try:
        for _, _, filenames, dirfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                try:
                    info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    finally:
        os.close(fd)
    return total


def make_dir(root: str, parts: Sequence[str]) -> None:
    fd = _open_dir(root, parts[:-1])
    try:
        os.mkdir(parts[-1], DIR_MODE, dir_fd=fd)
    except FileExistsError:
        raise BadPath(f"Path {_shown(parts)!r} already exists") from None
    finally:
        os.close(fd)


def rename(root: str, source: Sequence[str], target: Sequence[str]) -> None:
    """Move source to target (both inside the folder); an existing target is refused. The
    entry moved may be a link (it is moved, not followed)."""
    if list(target[: len(source)]) == list(source):
        raise BadPath(f"Path {_shown(target)!r} is inside {_shown(source)!r}")
    src = _open_dir(root, source[:-1])
    try:
        dst = _open_dir(root, target[:-1])
        try:
            try:
                os.stat(target[-1], dir_fd=dst, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                raise BadPath(f"Path {_shown(target)!r} already exists")
            os.rename(source[-1], target[-1], src_dir_fd=src, dst_dir_fd=dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _remove_tree(parent: int, name: str) -> int:
    """Delete parent/name and everything under it, never following a link; the bytes of the
    regular files removed (uploads in progress left out, as usage() does)."""
    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent)
        counted = stat.S_ISREG(info.st_mode) and not name.startswith(TEMP_PREFIX)
        return info.st_size if counted else 0
    freed = 0
    fd = os.open(name, _DIR_OPEN, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            freed += _remove_tree(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
    return freed


def delete(root: str, parts: Sequence[str], *, recursive: bool) -> int:
    """Delete a file, link or empty folder (or, recursive, a folder and all in it); the bytes
    of the regular files removed."""
    fd = _open_dir(root, parts[:-1])
    try:
        info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode) and not recursive:
            try:
                os.rmdir(parts[-1], dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise BadPath(
                        f"Folder {_shown(parts)!r} is not empty: delete it with recursive"
                    ) from None
                raise
            return 0
        return _remove_tree(fd, parts[-1])
    finally:
        os.close(fd)


STALE_TEMP_SECONDS = 24 * 3600


def _sweep_stale(dir_fd: int) -> None:
    """Remove uploads a crashed portal left half-written (untouched for a day) in this folder."""
    now = time.time()
    for name in os.listdir(dir_fd):
        if not name.startswith(TEMP_PREFIX):
            continue
        with contextlib.suppress(OSError):
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if now - info.st_mtime > STALE_TEMP_SECONDS:
                os.unlink(name, dir_fd=dir_fd)


class TempFile:
    """A new file written next to its final place (O_CREAT|O_EXCL, never through a link) and
    renamed into place by commit(); discard() (or any failure) leaves nothing behind."""

    def __init__(self, root: str, parts: Sequence[str]) -> None:
        self.parts = list(parts)
        self.dir_fd = _open_dir(root, parts[:-1])
        _sweep_stale(self.dir_fd)
        self.name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd: int | None = os.open(self.name, flags, FILE_MODE, dir_fd=self.dir_fd)
        except BaseException:
            os.close(self.dir_fd)
            raise
        self.size = 0
        self.done = False

    def write(self, data: bytes) -> None:
        if self.fd is None:
            raise ValueError("the upload is closed")
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)

    def commit(self, *, replace: bool = True) -> None:
        """Move the file into place (an existing file is replaced, a folder or link refused)."""
        if self.fd is None:
            raise ValueError("the upload is closed")
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        target = self.parts[-1]
        try:
            info = os.stat(target, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(info.st_mode) or not replace:
                self.discard()
                raise BadPath(f"Path {_shown(self.parts)!r} exists and is not a file")
        os.rename(self.name, target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.done = True
        os.close(self.dir_fd)

    def discard(self) -> None:
        if self.done:
            return
        self.done = True
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.dir_fd)


def read_chunks(handle: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(size):
            yield chunk
