"""The access log (portal.access_log.AccessLogger, named by deploy/gunicorn.conf.py) writes the
line gunicorn's own logger writes, for the default format and for formats naming headers and
environ entries, from atoms limited to what the format names."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms

from portal.access_log import BASE_ENVIRON, AccessLogger, named_in

CUSTOM = (
    '%(h)s "%(r)s" %(s)s %(b)s %(D)s %(p)s "%({X-Forwarded-For}i)s" %({content-type}o)s '
    '%({wsgi.url_scheme}e)s %({missing}i)s %(u)s "%(a)s" %(L)s'
)


def _request() -> tuple[Any, Any, dict[str, Any], datetime.timedelta]:
    headers = [
        ("HOST", "portal.example"),
        ("AUTHORIZATION", "Basic YWxpY2U6c2VjcmV0"),
        ("X-FORWARDED-FOR", '203.0.113.9, "10.0.0.1"'),
        ("USER-AGENT", "gpuc/1.0"),
    ]
    req = SimpleNamespace(headers=headers)
    resp = SimpleNamespace(
        status="201 Created",
        sent=840,
        headers=[("Content-Type", "application/json"), ("Vary", "Accept")],
    )
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": "Basic YWxpY2U6c2VjcmV0",
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/api/v1/jobs/?x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/api/v1/jobs/",
        "QUERY_STRING": "x=1",
        "HTTP_USER_AGENT": "gpuc/1.0",
        "HTTP_HOST": "portal.example",
        "wsgi.url_scheme": "https",
        "SERVER_NAME": "portal.example",
    }
    return req, resp, environ, datetime.timedelta(seconds=1, microseconds=2345)


def _line(logger_class: type[Logger], access_log_format: str | None) -> tuple[str, dict[str, Any]]:
    cfg = Config()
    if access_log_format is not None:
        cfg.set("access_log_format", access_log_format)
    logger = logger_class(cfg)
    req, resp, environ, took = _request()
    atoms = logger.atoms(resp, req, environ, took)
    # t is the time of the call: the two calls may straddle a second.
    atoms["t"] = "[06/Dec/2026:23:45:14 +0000]"
    return cfg.access_log_format % SafeAtoms(atoms), atoms


@pytest.mark.parametrize("access_log_format", [None, CUSTOM], ids=["default", "custom"])
def test_the_line_is_the_one_gunicorns_logger_writes(access_log_format):
    ours, _ = _line(AccessLogger, access_log_format)
    theirs, _ = _line(Logger, access_log_format)

    assert ours == theirs
    if access_log_format == CUSTOM:
        assert '"203.0.113.9, \\"10.0.0.1\\""' in ours  # a named header, quotes escaped
        assert " application/json https - alice " in ours  # response header, environ, missing


def test_only_the_atoms_the_format_names_are_built():
    _, default_atoms = _line(AccessLogger, None)
    _, custom_atoms = _line(AccessLogger, CUSTOM)
    _, gunicorns = _line(Logger, None)

    assert "{http_host}e" in gunicorns and "{vary}o" in gunicorns
    # What the fixed atoms are made of stays (as {name}e atoms, which gunicorn makes of any
    # environ entry it is given); no other header or environ entry is built.
    base = {f"{{{key.lower()}}}e" for key in BASE_ENVIRON}
    assert {key for key in default_atoms if key.startswith("{")} <= base
    assert {key for key in custom_atoms if key.startswith("{")} - base == {
        "{x-forwarded-for}i",
        "{content-type}o",
        "{wsgi.url_scheme}e",
    }
    assert named_in(CUSTOM).request_headers == {"x-forwarded-for", "missing"}


def test_the_production_configuration_names_this_logger():
    namespace: dict[str, Any] = {}
    with open("deploy/gunicorn.conf.py") as conf:
        exec(compile(conf.read(), "deploy/gunicorn.conf.py", "exec"), namespace)  # noqa: S102
    cfg = Config()
    cfg.set("logger_class", namespace["logger_class"])

    assert cfg.logger_class is AccessLogger
