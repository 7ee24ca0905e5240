"""Streaming multipart uploads into a project folder.

Django's own upload handlers keep small files in memory and large ones in /tmp. Here the one
handler writes each chunk (1 MiB at a time) to a temporary file beside its target in the project
folder (jobs.storage.services.Upload: O_EXCL, the per-file limit and the quota checked at every
chunk) and nothing is kept in memory. The body is parsed by the view itself, after the caller
is known to be a member (see api.FileUploadView: nothing reads request.POST before that), and
only a body read to its declared end with its closing boundary is accepted: a cut-off body
leaves no file, partial or temporary.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParser, MultiPartParserError

from jobs.storage import fs, services
from jobs.storage.exceptions import FileTooLarge, InvalidPath, InvalidUpload, StorageQuotaExceeded

CHUNK_BYTES = 1024 * 1024
# A refused upload's unread rest is read and dropped up to this much, so that the client (which
# is still sending) gets the 413 and its reason rather than a reset connection.
DRAIN_BYTES = 64 * 1024 * 1024
FIELD = "file"


class _Received:
    """What the handler hands the parser for a finished part (the parser only closes it)."""

    def __init__(self, upload: services.Upload) -> None:
        self.upload = upload

    def close(self) -> None:
        pass


class ProjectUploadHandler(FileUploadHandler):
    chunk_size = CHUNK_BYTES

    def __init__(self, *, folder: services.Folder, directory: str) -> None:
        super().__init__(request=None)
        self.folder = folder
        self.directory = directory
        self.current: services.Upload | None = None
        self.uploads: list[services.Upload] = []

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, Any] | None = None,
    ) -> None:
        if field_name != FIELD:
            raise InvalidUpload(f"Send the file in a part named {FIELD!r}", field=FIELD)
        if self.uploads:
            raise InvalidUpload("Send one file per upload", field=FIELD)
        if "/" in file_name:
            # The name of a file, not a path: '../x' or '/etc/x' are refused, never cut short.
            fs.clean_path(file_name)  # raises BadPath naming it when it escapes
            raise fs.BadPath(f"Path {file_name!r}: give a file name, not a path")
        path = f"{self.directory.rstrip('/')}/{file_name}" if self.directory else file_name
        self.current = services.Upload(folder=self.folder, path=path, expected_size=content_length)
        self.uploads.append(self.current)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self.current is None:
            raise InvalidUpload("A file's bytes came before its headers", field=FIELD)
        self.current.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> _Received | None:  # type: ignore[override]
        if self.current is None:
            return None
        received, self.current = _Received(self.current), None
        return received

    def upload_interrupted(self) -> None:
        self.discard()

    def discard(self) -> None:
        for upload in self.uploads:
            upload.discard()


class _RawNameParser(MultiPartParser):
    """Django's parser, keeping the file name as sent (Django cuts '../../x' down to 'x'; the
    portal refuses it instead, naming it)."""

    def sanitize_file_name(self, file_name: str) -> str | None:
        return file_name or None


class _WatchedStream:
    """The request body as read by the parser: counts the bytes and keeps the last few, to tell
    a complete body (its declared length, ending with the closing boundary) from a cut one."""

    def __init__(self, request: HttpRequest, length: int) -> None:
        self.request = request
        self.length = length
        self.seen = 0
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.request.read(size)
        self.seen += len(data)
        self.tail = (self.tail + data[-256:])[-256:]
        return data


def _drain(stream: _WatchedStream) -> None:
    left = min(stream.length - stream.seen, DRAIN_BYTES)
    while left > 0 and (data := stream.read(min(left, CHUNK_BYTES))):
        left -= len(data)


def receive(*, request: HttpRequest, folder: services.Folder, directory: str) -> fs.Entry:
    """Parse the multipart body (one file) into `directory` of the folder; the entry stored."""
    content_type = request.META.get("CONTENT_TYPE", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidUpload(
            f"Send the file as multipart/form-data with a part named {FIELD!r}", field=FIELD
        )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise InvalidUpload("The upload needs a Content-Length", field=FIELD) from None
    limit = services.max_upload_bytes()
    if length > limit + 64 * 1024:
        raise FileTooLarge(
            f"The upload is larger than the limit of {limit} bytes per file",
            field=FIELD,
            limit_bytes=limit,
        )
    stream = _WatchedStream(request, length)
    handler = ProjectUploadHandler(folder=folder, directory=directory)
    try:
        try:
            _RawNameParser(request.META, stream, [handler], "utf-8").parse()  # type: ignore[arg-type]
        except MultiPartParserError as exc:
            hint = " (a part's headers, its file name included, must fit in 8 KB)"
            hint = hint if "header size" in str(exc) else ""
            raise InvalidUpload(f"The multipart body could not be read: {exc}{hint}") from None
        except fs.BadPath as exc:
            raise InvalidPath(str(exc), field="path") from None
        except (FileTooLarge, StorageQuotaExceeded):
            _drain(stream)
            raise
        boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
        if stream.seen < length or f"--{boundary}--".encode() not in stream.tail:
            raise InvalidUpload(
                f"The upload was cut off after {stream.seen} of {length} bytes: nothing was kept",
                field=FIELD,
            )
        if not handler.uploads:
            raise InvalidUpload(
                f"No file was sent: send a part named {FIELD!r} with a file name", field=FIELD
            )
        if handler.current is not None:
            raise InvalidUpload("The last file of the upload was not complete", field=FIELD)
        return handler.uploads[0].finish()
    finally:
        handler.discard()
