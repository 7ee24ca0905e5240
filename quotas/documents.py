"""Documents attached to grant requests: how they are named on disk and how they are served.

A document is private to the people who may see its request. It is never served from a public
URL: it is stored under an unguessable random name (the uploaded name is kept only as the
display and download name) and streamed by a view that checks the caller first. MEDIA_ROOT has
no URL of its own.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import unicodedata
from typing import TYPE_CHECKING

from django.http import FileResponse

from portal.errors import NotFound

if TYPE_CHECKING:
    from quotas.models import AllocationRequest

DOCUMENT_MAX_BYTES = 10 * 1024 * 1024
# What a document may be, and the type it is served as: never HTML, SVG or script, whatever
# its bytes hold (served as attachments with nosniff, so no browser renders them in the page).
DOCUMENT_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
}
DOCUMENT_EXTENSIONS = tuple(DOCUMENT_TYPES)
FALLBACK_TYPE = "application/octet-stream"
_NAME_MAX = 200


def display_name(uploaded: str) -> str:
    """The uploaded file's own name, safe to show and to offer as a download name: the last
    path component (either slash), without control characters, at most 200 characters."""
    base = re.split(r"[\\/]", uploaded or "")[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if base in ("", ".", ".."):
        return "document"
    if len(base) > _NAME_MAX:
        stem, ext = posixpath.splitext(base)
        base = stem[: _NAME_MAX - len(ext)] + ext if len(ext) <= 16 else base[:_NAME_MAX]
    return base


def _extension(name: str) -> str:
    ext = posixpath.splitext(display_name(name))[1].lower()
    return ext if ext in DOCUMENT_TYPES else ""


def storage_path(instance: object, filename: str) -> str:
    """`upload_to` of AllocationRequest.document: a random 128-bit name under
    allocation-requests/, keeping only a known extension of the uploaded name."""
    return f"allocation-requests/{secrets.token_hex(16)}{_extension(filename)}"


def content_type(name: str) -> str:
    return DOCUMENT_TYPES.get(_extension(name), FALLBACK_TYPE)


def document_response(request: AllocationRequest) -> FileResponse:
    """Stream the request's document as an attachment with a fixed, safe type. The caller
    must already have fetched `request` through a selector scoped to the user."""
    if not request.document:
        raise NotFound("This request has no document")
    try:
        handle = request.document.open("rb")
    except FileNotFoundError:
        raise NotFound("This request's document is missing from storage") from None
    name = request.document_display_name
    response = FileResponse(
        handle, as_attachment=True, filename=name, content_type=content_type(name)
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response
