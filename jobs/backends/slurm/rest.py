"""A small slurmrestd client: one urllib3 connection pool, per-user HS256 tokens, and Slurm's
error conventions turned into BackendError (permanent) or BackendUnavailable (retry).

urllib3 directly rather than a requests.Session: the forwarder makes one call per job, and
requests' per-call preparation (settings merge, cookies, hooks) cost more than twice the CPU of
the call itself on these machines (bench/submit.py: 1.4 ms against 0.6 ms per submission).

slurmrestd 22.05 answers a refused request with HTTP 500 and an "errors" array carrying Slurm's
errno (`error_code` on submit, `error_number` elsewhere); slurmdbd queries may even answer 200
with errors. So the status code alone says little: the errno decides.
"""

from __future__ import annotations

import base64
import binascii
import json as jsonlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3

from jobs.backends.base import BackendError, BackendUnavailable

# Slurm errnos that mean "try again later", not "this request is wrong": communication and
# socket failures, authentication (an expired/rotated key is the portal's problem, not the
# job's), controller busy or in standby, accounting database down, and plain errnos such as
# EAGAIN/ECONNREFUSED/ETIMEDOUT. -1 is what slurmctld answers for a token it cannot verify.
TRANSIENT_ERRNOS = frozenset(
    {-1, 4, 11, 104, 110, 111, 112, 113, 2007, 2020, 2027, 2103, 2131, 7000, 7008}
)
TRANSIENT_RANGES = ((1000, 1999), (5000, 5999))
NOTHING_FOUND = 9003  # slurmdbd: "Nothing found with query"
INVALID_JOB_ID = 2017
ALREADY_DONE = 2021
INVALID_ACCOUNT = 2045  # "Invalid account or account/partition combination specified"


def is_transient(errno: int) -> bool:
    return errno in TRANSIENT_ERRNOS or any(lo <= errno <= hi for lo, hi in TRANSIENT_RANGES)


class PathNotFound(BackendUnavailable):
    """slurmrestd does not serve this path (HTTP 404 without a Slurm error): the API version
    asked for is not loaded, e.g. after the cluster was upgraded."""


class SlurmRestError(BackendError):
    """A refusal by Slurm, with its errno(s) (BackendError: the request will not succeed)."""

    def __init__(self, message: str, errnos: tuple[int, ...], body: Any = None) -> None:
        super().__init__(message)
        self.errnos = errnos
        self.body = body if isinstance(body, dict) else {}


def _json_or_none(data: bytes) -> Any:
    try:
        return jsonlib.loads(data)
    except ValueError:
        return None


def _errors(body: Any) -> list[tuple[int, str]]:
    """(errno, message) of every entry of a response's "errors" array."""
    if not isinstance(body, Mapping):
        return []
    found = []
    for item in body.get("errors") or ():
        if not isinstance(item, Mapping):
            continue
        errno = item.get("error_number", item.get("error_code", -1))
        try:
            errno = int(errno)
        except (TypeError, ValueError):
            errno = -1
        text = str(item.get("error") or "")
        detail = str(item.get("description") or "")
        message = f"{text}: {detail}" if detail and detail != text else (text or detail)
        found.append((errno, message or f"Slurm error {errno}"))
    return found


class SlurmRest:
    """HTTP access to one slurmrestd as any cluster user (tokens minted from the shared key)."""

    def __init__(
        self,
        *,
        cluster: str,
        url: str,
        jwt_key_file: str = "",
        jwt_key_env: str = "",
        token_lifetime: int = 1800,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_size: int = 16,
    ) -> None:
        self.cluster = cluster
        self.url = url.rstrip("/")
        self.jwt_key_file = jwt_key_file
        self.jwt_key_env = jwt_key_env
        self.token_lifetime = max(60, int(token_lifetime))
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        # Up to pool_size kept-alive connections; a burst beyond that opens (and then drops)
        # extra ones rather than waiting. No retries: the caller's task retries with backoff.
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size, retries=False)
        self._lock = threading.Lock()
        self._key: tuple[float, bytes] | None = None
        self._tokens: dict[str, tuple[float, str]] = {}

    # --- tokens ----------------------------------------------------------------------------

    def _signing_key(self) -> bytes:
        """The HS256 key, re-read when its file changes (key rotation needs no restart)."""
        if self.jwt_key_env:
            raw = os.environ.get(self.jwt_key_env, "").strip()
            if not raw:
                raise BackendUnavailable(
                    f"Cluster {self.cluster}: environment variable {self.jwt_key_env} is empty"
                )
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise BackendUnavailable(
                    f"Cluster {self.cluster}: {self.jwt_key_env} must hold the key in base64"
                ) from None
        try:
            mtime = os.stat(self.jwt_key_file).st_mtime
            if self._key is None or self._key[0] != mtime:
                with open(self.jwt_key_file, "rb") as handle:
                    self._key = (mtime, handle.read())
                self._tokens.clear()
        except OSError as exc:
            raise BackendUnavailable(
                f"Cluster {self.cluster}: cannot read the JWT key: {exc}"
            ) from exc
        return self._key[1]

    def token(self, user: str) -> str:
        """A token for `user` (claims iat, exp, sun), reused until a quarter of its life is left."""
        import jwt

        now = time.time()
        with self._lock:
            key = self._signing_key()
            cached = self._tokens.get(user)
            if cached and cached[0] - now > self.token_lifetime / 4:
                return cached[1]
            issued = int(now)
            expires = issued + self.token_lifetime
            token = jwt.encode({"iat": issued, "exp": expires, "sun": user}, key, "HS256")
            self._tokens[user] = (expires, token)
            return token

    # --- calls -----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        user: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        ok_errnos: frozenset[int] = frozenset(),
        permanent_errnos: frozenset[int] = frozenset(),
    ) -> dict[str, Any] | None:
        """The JSON body of a call made as `user`; None for 304 Not Modified. Errors whose errno
        is in `ok_errnos` are ignored (e.g. "already done" when cancelling); those in
        `permanent_errnos` are refusals even if usually transient (slurmdbd answers a refused
        association with -1, "Unspecified error")."""
        headers = {
            "Accept": "application/json",
            "User-Agent": "gpu-commons",
            "X-SLURM-USER-NAME": user,
            "X-SLURM-USER-TOKEN": self.token(user),
        }
        action = f"{method} {path}"
        url = self.url + path
        if params:
            url += "?" + urlencode(params, doseq=True)  # a list value repeats the parameter
        payload = None
        if json is not None:
            payload = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self.pool.request(
                method, url, body=payload, headers=headers, timeout=self.timeout
            )
        except urllib3.exceptions.HTTPError as exc:
            raise BackendUnavailable(
                f"slurmrestd of {self.cluster} unreachable ({action}): {exc}"
            ) from exc
        status = response.status
        if status == 304:
            return None
        if status == 404 and not _errors(_json_or_none(response.data)):
            raise PathNotFound(f"slurmrestd of {self.cluster} does not serve {action} (HTTP 404)")
        if status in (401, 403):
            raise BackendUnavailable(
                f"slurmrestd of {self.cluster} refused the portal's token for {user} "
                f"({action}: HTTP {status})"
            )
        try:
            body = jsonlib.loads(response.data)
        except ValueError:
            body = None
        told = _errors(body)
        errors = [(n, m) for n, m in told if n not in ok_errnos]
        if told and not errors and isinstance(body, dict):
            # Only errors the caller expects, whatever the status: slurmrestd 22.05 answers the
            # cancel of a job slurmctld has already forgotten with HTTP 500 and errno 2017.
            return body
        if errors:
            errnos = tuple(n for n, _ in errors)
            message = "; ".join(m for _, m in errors)
            if all(n == NOTHING_FOUND for n in errnos):
                return body if isinstance(body, dict) else {}
            if any(is_transient(n) and n not in permanent_errnos for n in errnos):
                raise BackendUnavailable(f"Slurm on {self.cluster} failed ({action}): {message}")
            raise SlurmRestError(message, errnos, body)
        if status < 400 and isinstance(body, dict):
            return body
        text = response.data[:300].decode(errors="replace")
        if status >= 500 or not isinstance(body, dict):
            raise BackendUnavailable(
                f"slurmrestd of {self.cluster} answered HTTP {status} ({action}): {text[:200]!r}"
            )
        raise BackendError(f"slurmrestd refused {action}: HTTP {status} {text}")
