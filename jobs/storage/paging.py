"""Pages of a folder listing: `page_size` and an opaque `cursor` (the name a page starts after,
or ends before), as the API's cursor pages take them; a bad one is a 400 naming it."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from jobs.storage.exceptions import InvalidPage

API_PAGE_SIZE = 1000  # (a folder up to this size lists in one page, as before pages)
MAX_PAGE_SIZE = 1000
WEB_PAGE_SIZE = 200
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
CURSOR_RULE = "use the next or previous link"


@dataclass(frozen=True)
class Position:
    """Where a page is: after the name `after`, or before the name `before` (or the start)."""

    after: str | None = None
    before: str | None = None


def cursor_encode(*, after: str | None = None, before: str | None = None) -> str:
    mark, name = ("a", after) if after is not None else ("b", before)
    raw = f"{mark}:{name}".encode("utf-8", "surrogateescape")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str) -> Position:
    """The position a cursor names; InvalidPage for anything the listing did not give out."""
    if not cursor:
        return Position()
    try:
        if not URLSAFE.fullmatch(cursor):
            raise ValueError(cursor)
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        mark, sep, name = raw.decode("utf-8", "surrogateescape").partition(":")
        # Any name a folder can hold (a job may make names the portal would refuse to write).
        if not sep or mark not in ("a", "b") or name in ("", ".", "..") or set("/\x00") & set(name):
            raise ValueError(cursor)
    except (ValueError, binascii.Error):
        shown = cursor if len(cursor) <= 40 else cursor[:40] + "…"
        raise InvalidPage(f"Invalid cursor {shown!r}: {CURSOR_RULE}", field="cursor") from None
    return Position(after=name) if mark == "a" else Position(before=name)


def page_size_parse(text: str | None, *, default: int = API_PAGE_SIZE) -> int:
    """A page size from the query string (absent or blank: `default`); InvalidPage naming the
    value and the rule otherwise."""
    if text is None or text == "":
        return default
    shown = text if len(text) <= 40 else text[:40] + "…"
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise InvalidPage(
            f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}, not {shown!r}",
            field="page_size",
        )
    return int(text)
