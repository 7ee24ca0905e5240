"""Logs and results: read a job's stdout or stderr by byte range, and list or open the
files it wrote under its output directory (paths escaping it are refused)."""

from __future__ import annotations

from typing import BinaryIO

from accounts.models import User
from jobs.backends import get_backend
from jobs.backends.base import BackendError, BackendUnavailable, LogChunk, ResultFile
from jobs.exceptions import ClusterUnavailable, InvalidJob, ResultNotFound
from jobs.models import Job
from jobs.services.specs import job_ref

LOG_DEFAULT_LIMIT = 64 * 1024
LOG_MAX_LIMIT = 1024 * 1024
STREAMS = ("stdout", "stderr")


# --- logs and results --------------------------------------------------------------------


def _utf8_prefix(data: bytes) -> bytes:
    """Drop a multi-byte character cut at the end of a chunk (it comes whole next time)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: keep looking for the lead byte
        if byte & 0x80 == 0:
            return data
        needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return data if back >= needed else data[:-back]
    return data


def job_read_log(
    *, user: User, job: Job, stream: str = "stdout", offset: int = 0, limit: int | None = None
) -> LogChunk:
    """Up to `limit` bytes of the job's stdout/stderr from byte `offset` (negative: from the
    end). `eof` is true once the job has ended and everything was read."""
    if stream not in STREAMS:
        raise InvalidJob("stream must be 'stdout' or 'stderr'", field="stream")
    limit = LOG_DEFAULT_LIMIT if limit is None else limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LOG_MAX_LIMIT:
        raise InvalidJob(f"limit must be between 1 and {LOG_MAX_LIMIT}", field="limit")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise InvalidJob("offset must be a whole number", field="offset")
    if not job.backend_id or job.origin == Job.Origin.DIRECT:
        # Nothing forwarded yet, or a job submitted outside the portal (its output is wherever
        # its script wrote it: the portal never knew its directory).
        if offset > 0:
            raise InvalidJob(
                f"offset {offset} is past the end of the log (0 bytes)", field="offset"
            )
        return LogChunk(data=b"", next_offset=0, eof=job.is_final)
    try:
        chunk = get_backend(job.cluster).read_log(job_ref(job), stream, offset, limit)
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None
    except BackendError as exc:
        raise InvalidJob(str(exc), field="stream") from None
    if offset > 0 and chunk.next_offset < offset:
        raise InvalidJob(
            f"offset {offset} is past the end of the log ({chunk.next_offset} bytes)",
            field="offset",
        )
    data = chunk.data
    at_end = chunk.eof
    if data and not at_end:
        trimmed = _utf8_prefix(data)
        if trimmed is not data:
            at_end = False
        next_offset = chunk.next_offset - (len(data) - len(trimmed))
        data = trimmed
    else:
        next_offset = chunk.next_offset
    return LogChunk(data=data, next_offset=next_offset, eof=at_end and job.is_final)


def job_results(*, user: User, job: Job) -> list[ResultFile]:
    """Files the job wrote under its output directory, with sizes."""
    if not job.backend_id or job.origin == Job.Origin.DIRECT:
        return []
    try:
        return get_backend(job.cluster).list_results(job_ref(job))
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None
    except BackendError as exc:
        # e.g. the job replaced its output folder with a link (to / or to another job's files)
        raise InvalidJob(f"The job's results cannot be listed: {exc}", field="results") from None


def clean_result_path(path: str) -> str:
    """A relative path inside the output directory, or InvalidJob naming `path`."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise InvalidJob("path must name a result file", field="path")
    if "\x00" in path:
        raise InvalidJob("path must not contain NUL bytes", field="path")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise InvalidJob("path must be relative to the job's output directory", field="path")
    parts = path.replace("\\", "/").split("/")
    if any(part == ".." for part in parts):
        raise InvalidJob("path must not contain '..'", field="path")
    return "/".join(part for part in parts if part not in ("", "."))


def job_open_result(*, user: User, job: Job, path: str) -> BinaryIO:
    """Open one result file for streaming; paths escaping the output directory are refused."""
    clean = clean_result_path(path)
    if not clean:
        raise InvalidJob("path must name a result file", field="path")
    if not job.backend_id or job.origin == Job.Origin.DIRECT:
        raise ResultNotFound("No such result file")
    try:
        return get_backend(job.cluster).open_result(job_ref(job), clean)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ResultNotFound("No such result file") from None
    except BackendUnavailable as exc:
        raise ClusterUnavailable(f"Cluster {job.cluster.name} did not answer: {exc}") from None
    except (BackendError, PermissionError) as exc:
        raise InvalidJob(f"path: {exc}", field="path") from None
