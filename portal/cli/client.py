"""Configuration and the HTTP client of `gpuc`: bearer-token JSON over /api/v1/."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_QUOTA = 0, 1, 2, 4
TIMEOUT = (10, 60)  # seconds: connect, read
TRANSIENT_STATUSES = frozenset({502, 503, 504})
RETRY_DELAY = 1.0  # seconds, doubled at each retry
# 429 Too Many Requests: the server did nothing, so any method may be repeated after the pause
# it asks for (Retry-After), a few times; a pause longer than MAX_RETRY_AFTER is not waited out.
RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER = 120.0  # seconds


class CliError(Exception):
    """A failure to report as `error: <message>` with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CliError):
    """The API answered 4xx/5xx; `detail` and `code` come from its `{"detail","code"}` body."""

    def __init__(self, status: int, detail: str, code: str, body: Any = None) -> None:
        super().__init__(detail, EXIT_QUOTA if code == "insufficient_quota" else EXIT_ERROR)
        self.status = status
        self.detail = detail
        self.code = code
        self.body = body


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    url: str
    token: str


def config_path() -> Path:
    """$GPUC_CONFIG, else ~/.config/gpuc/config.json."""
    explicit = os.environ.get("GPUC_CONFIG")
    return Path(explicit) if explicit else Path.home() / ".config" / "gpuc" / "config.json"


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the configuration file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"the configuration file {path} is not a JSON object")
    return data


def load_config() -> Config:
    """The URL and token: GPUC_URL / GPUC_TOKEN override the configuration file."""
    stored = read_config_file(config_path())
    url = os.environ.get("GPUC_URL") or stored.get("url") or ""
    token = os.environ.get("GPUC_TOKEN") or stored.get("token") or ""
    if not url or not token:
        raise CliError("not logged in: run 'gpuc login' (or set GPUC_URL and GPUC_TOKEN)")
    return Config(url=url, token=token)


CONFIG_KEYS = ("url", "token", "project", "cluster")


def save_config(path: Path, **changes: str | None) -> None:
    """Change some keys of the file (None removes one), atomically, readable by the owner
    only (0600, directory 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = read_config_file(path)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the HTTP client -------------------------------------------------------------------


def _root_url(url: str) -> str:
    """Normalise what the user typed ('portal.example', '.../api/v1/') to the site root."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url, re.IGNORECASE):
        url = f"https://{url}"
    return url.removesuffix("/api/v1")


class Client:
    """Bearer-token JSON client of /api/v1/; raises ApiError/CliError, never returns a 4xx."""

    def __init__(self, url: str, token: str, session: requests.Session | None = None) -> None:
        self.root = _root_url(url)
        self.base = f"{self.root}/api/v1/"
        self.session = session or requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
        self.session.headers["User-Agent"] = f"gpuc/{_version()}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        retries: int | None = None,
    ) -> requests.Response:
        """One call; transient failures (network, 502/503/504) are retried `retries` times
        (default: GETs 3, other methods 0: only an idempotent POST may be repeated), and a 429
        up to RATE_LIMIT_RETRIES times after the pause its Retry-After header asks for."""
        retries = (3 if method == "GET" else 0) if retries is None else retries
        attempt = throttled = 0
        while True:
            last = attempt == retries
            try:
                response = self.session.request(
                    method,
                    self.base + path,
                    params={k: v for k, v in (params or {}).items() if v not in (None, "")},
                    json=body,
                    headers=headers,
                    stream=stream,
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                if isinstance(exc, requests.Timeout):
                    failure = f"{self.root} did not answer in time"
                else:
                    failure = f"cannot reach {self.root}: {failure_reason(exc)}"
                if last or not isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                    raise CliError(failure) from None
                _pause(attempt, failure)
                attempt += 1
                continue
            if response.status_code == 429 and throttled < RATE_LIMIT_RETRIES:
                delay = retry_after(response.headers.get("Retry-After"), throttled)
                if delay <= MAX_RETRY_AFTER:
                    response.close()  # give the connection back before waiting
                    throttled += 1
                    _wait(delay, f"{self.root} is rate limiting (HTTP 429)")
                    continue
            if response.status_code in TRANSIENT_STATUSES and not last:
                _pause(attempt, f"{self.root} answered HTTP {response.status_code}")
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params))

    def post(
        self,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        retries: int = 0,
    ) -> Any:
        return _json(self.request("POST", path, body=body, headers=headers, retries=retries))

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Each page of a cursor-paginated endpoint (one for a plain list), following `next`.

        Only the cursor's query string is taken from `next`, so the token never goes to another
        host and a proxy that rewrites scheme or host does not matter.
        """
        params = dict(params or {})
        while True:
            page = self.get(path, params)
            yield page
            following = page.get("next") if isinstance(page, dict) else None
            if not following:
                return
            params = dict(parse_qsl(urlsplit(following).query, keep_blank_values=True))

    def paginate(
        self, path: str, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Items of a cursor-paginated (or plain list) endpoint, up to limit."""
        count = 0
        for page in self.pages(path, params):
            items = page.get("results", []) if isinstance(page, dict) else page
            for item in items:
                if limit is not None and count >= limit:
                    return
                yield item
                count += 1
            if limit is not None and count >= limit:
                return


def _pause(attempt: int, failure: str) -> None:
    _wait(RETRY_DELAY * 2**attempt, failure)


def _wait(delay: float, failure: str) -> None:
    print(f"warning: {failure}; retrying in {delay:g} s", file=sys.stderr)
    _sleep(delay)


_sleep = time.sleep  # one name for the tests to record the pauses by


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110
    10.2.3); without a usable one, the usual backoff for this attempt."""
    text = (value or "").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return RETRY_DELAY * 2.0**attempt
    if when.tzinfo is None:  # an HTTP-date is always GMT; parsedate leaves "-0000" naive
        when = when.replace(tzinfo=UTC)
    return float(max(0, math.ceil((when - datetime.now(UTC)).total_seconds())))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpu-commons")
    except PackageNotFoundError:
        return "dev"


def failure_reason(exc: requests.RequestException) -> str:
    """The useful part of urllib3's nested message ('[Errno 111] Connection refused')."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (if the portal serves plain HTTP, use an http:// URL)"
    text = str(exc.args[0]) if exc.args else exc.__class__.__name__
    if match := re.search(r"\[Errno -?\d+\] ([^'\"]+)", text):
        return match[1].strip().rstrip(")")
    return text


def _json(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise CliError(
            f"unexpected answer from {response.url} (HTTP {response.status_code}, not JSON)"
        ) from None


def _api_error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail, code = str(body["detail"]), str(body.get("code") or "")
    else:
        detail, code = f"HTTP {response.status_code} {response.reason or ''}".strip(), ""
    if response.status_code == 401:
        detail += " (run 'gpuc login' with a valid token)"
    if response.status_code == 429 and response.headers.get("Retry-After"):
        wait = retry_after(response.headers["Retry-After"], 0)
        detail += f" (rate limited: try again in {math.ceil(wait)} s)"
    return ApiError(response.status_code, detail, code, body)
