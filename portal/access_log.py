"""gunicorn's logger with an access log that costs what its format uses (deploy/gunicorn.conf.py).

For every request, gunicorn's Logger.atoms builds an atom of each request header, response
header and WSGI environ entry (about 80 with Django's environ), and SafeAtoms copies them all
once more to escape quotes, for a format that names ten: the access log was about a tenth of
a single-job POST's instructions in a worker, most of it those atoms. This logger hands
gunicorn's own atoms() only the headers and environ entries the configured format names, so
every line is the one gunicorn writes, for any access_log_format, at about a third of the
cost."""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from gunicorn.glogging import Logger

# What gunicorn's atoms() reads from the environ for its fixed atoms (h u r m U q H f a).
BASE_ENVIRON = (
    "REMOTE_ADDR",
    "HTTP_AUTHORIZATION",
    "REQUEST_METHOD",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "PATH_INFO",
    "QUERY_STRING",
    "HTTP_REFERER",
    "HTTP_USER_AGENT",
)


class Named(NamedTuple):
    """The lower-cased names a format uses as {name}i, {name}o and {name}e atoms."""

    request_headers: frozenset[str]
    response_headers: frozenset[str]
    environ: frozenset[str]


@functools.lru_cache(maxsize=8)
def named_in(access_log_format: str) -> Named:
    keys = [key.lower() for key in re.findall(r"%\(([^)]*)\)", access_log_format)]

    def of(kind: str) -> frozenset[str]:
        return frozenset(k[1:-2] for k in keys if k.startswith("{") and k.endswith("}" + kind))

    return Named(of("i"), of("o"), of("e"))


class _Response(NamedTuple):
    """What atoms() reads of gunicorn's Response, with only the named headers."""

    status: Any
    sent: Any
    headers: list[tuple[str, str]]


def _only(pairs: Iterable[tuple[str, str]], names: frozenset[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k.lower() in names] if names else []


class AccessLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type information
    def atoms(
        self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: datetime.timedelta
    ) -> dict[str, Any]:
        named = named_in(self.cfg.access_log_format)
        used = {key: environ[key] for key in BASE_ENVIRON if key in environ}
        if named.environ:
            used.update((k, v) for k, v in environ.items() if k.lower() in named.environ)
        headers = req.headers if hasattr(req, "headers") else req
        if hasattr(headers, "items"):
            headers = headers.items()
        response = _Response(
            resp.status, getattr(resp, "sent", None), _only(resp.headers, named.response_headers)
        )
        atoms: dict[str, Any] = super().atoms(
            response, _only(headers, named.request_headers), used, request_time
        )
        return atoms
