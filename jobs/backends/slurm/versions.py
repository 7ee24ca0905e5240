"""The slurmrestd OpenAPI versions the Slurm backend speaks, and what differs between them.

One backend and one client speak every version; only the tables here differ. A version is
chosen per cluster: pinned by the cluster option `api_version`, or ("auto", the default) the
newest one that both the portal and the cluster's slurmrestd serve, read from the paths of its
OpenAPI description (GET /openapi/v3). Pure code: no I/O here.

v0.0.38 (Slurm 22.05): {"script", "job"}; environment as an object; time_limit and
    memory_per_node as plain integers; GPUs as "gres": "gpu:h100:2".
v0.0.40 (23.11 to 24.11), v0.0.41 (24.05 to 25.05), v0.0.42 (24.11 to 25.11): {"job"} with
    the script inside (the top-level "script" is deprecated from v0.0.41); environment as a
    list of "NAME=value"; time_limit and memory_per_node as {"set", "infinite", "number"};
    GPUs as "tres_per_node": "gres/gpu:h100:2" ("gres" is ignored).
Query parameters: lists as "1,2" (v0.0.38) or repeated (later: list_param); accounting
    times as "now-<n>seconds" in every version (time_query); the jobs listing revalidated with
    ?update_time only in v0.0.38 (listing_revalidation).
(Checked against the OpenAPI descriptions and the answers of the 22.05 and 24.11 daemons of
deploy/slurm.)

Record differences are read by `records` (which accepts every version's records); the request
differences are here. Every version serves accounting under /slurmdb/<version>/ (22.05's
dbv0.0.38 plugin included).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobs.backends.base import BackendError

AUTO = "auto"
_PATH_RE = re.compile(r"^/(slurm|slurmdb)/(v\d+\.\d+\.\d+)/")


class UnsupportedVersion(BackendError):
    """The cluster's slurmrestd serves no API version the portal speaks (or not the pinned one)."""

    def __init__(self, message: str, offered: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.offered = offered


@dataclass(frozen=True)
class ApiVersion:
    """One slurmrestd OpenAPI version: where its endpoints are and how its requests are shaped.

    `ctld(path)` and `dbd(path)` build the slurmctld (/slurm/...) and slurmdbd (/slurmdb/...)
    paths; `number(n)` and `submit_body(...)` shape request values."""

    version: str
    releases: str
    # slurmrestd's -s plugins that serve this version (for running a slurmrestd of one's own).
    plugins: str
    env_as_list: bool
    wrapped_numbers: bool
    script_in_job: bool
    gpus_field: str
    # GET /jobs?update_time=<epoch> answers 304 when no job changed (22.05). 24.11 answers 200
    # with an empty list instead (indistinguishable from an empty cluster) and its v0.0.40 and
    # v0.0.41 refuse an epoch there (422), so later versions always fetch the whole listing.
    listing_revalidation: bool
    # A list in a query parameter (step, users, account...): 22.05 reads "1,2" (and only the
    # last of repeated parameters); 24.11 refuses "1,2" (422) and reads step=1&step=2.
    csv_lists: bool
    # Accounting served by this slurmrestd (False when it runs without the slurmdbd plugin);
    # set by negotiation, True for a pinned version.
    accounting: bool = True

    @property
    def ctld_prefix(self) -> str:
        return f"/slurm/{self.version}"

    @property
    def dbd_prefix(self) -> str:
        return f"/slurmdb/{self.version}"

    def ctld(self, path: str) -> str:
        """The slurmctld endpoint `path` (like "/jobs") of this version."""
        return self.ctld_prefix + _rooted(path)

    def dbd(self, path: str) -> str:
        """The slurmdbd (accounting) endpoint `path` (like "/jobs") of this version."""
        return self.dbd_prefix + _rooted(path)

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)

    def at_least(self, version: str) -> bool:
        return self.key >= version_key(version)

    def list_param(self, values: Iterable[object]) -> str | list[str]:
        """A query parameter holding several values, as this version reads it (pass the
        params to urlencode with doseq, as SlurmRest.call does)."""
        items = [str(v) for v in values]
        return ",".join(items) if self.csv_lists else items

    @staticmethod
    def time_query(epoch: float, *, now: float | None = None) -> str:
        """A point in time for slurmdbd query parameters (start_time, end_time) that every
        version parses: "now-<n>seconds" (22.05's accounting and v0.0.40/41 refuse epochs;
        relative to slurmrestd's clock, so clock skew does not matter)."""
        ago = max(0, int((time.time() if now is None else now) - epoch))
        return f"now-{ago}seconds"

    def number(self, value: int | None) -> Any:
        """An integer request field: plain (v0.0.38) or {"set", "infinite", "number"}; None is
        "not set"."""
        if not self.wrapped_numbers:
            return value
        if value is None:
            return {"set": False, "infinite": False, "number": 0}
        return {"set": True, "infinite": False, "number": int(value)}

    def gpus(self, gpu_type: str, count: int) -> tuple[str, str]:
        """(field, value) asking for `count` GPUs of `gpu_type` (any type when empty)."""
        spec = f"gpu:{gpu_type}:{count}" if gpu_type else f"gpu:{count}"
        if self.gpus_field == "tres_per_node":
            return "tres_per_node", f"gres/{spec}"
        return "gres", spec

    def job_description(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """A job description in the portal's neutral form (v0.0.38's field names with plain
        values; GPUs as "gpus": (type, count)) shaped for this version."""
        out: dict[str, Any] = {}
        for name, value in job.items():
            if name == "environment":
                env = {str(k): str(v) for k, v in dict(value).items()}
                out[name] = [f"{k}={v}" for k, v in env.items()] if self.env_as_list else env
            elif name in NUMBER_FIELDS:
                out[name] = self.number(value)
            elif name == "gpus":
                gpu_type, count = value
                field, spec = self.gpus(str(gpu_type or ""), int(count))
                out[field] = spec
            else:
                out[name] = value
        return out

    def submit_body(self, script: str, job: Mapping[str, Any]) -> dict[str, Any]:
        """The body of POST job/submit for one batch job (`job` in the neutral form)."""
        description = self.job_description(job)
        if self.script_in_job:
            return {"job": {**description, "script": script}}
        return {"script": script, "job": description}


# Integer job-description fields that v0.0.40+ take as {"set", "infinite", "number"}.
NUMBER_FIELDS = frozenset({"time_limit", "memory_per_node", "memory_per_cpu", "time_minimum"})

VERSIONS: dict[str, ApiVersion] = {
    v.version: v
    for v in (
        ApiVersion(
            version="v0.0.38",
            releases="22.05",
            plugins="openapi/v0.0.38,openapi/dbv0.0.38",
            env_as_list=False,
            wrapped_numbers=False,
            script_in_job=False,
            gpus_field="gres",
            listing_revalidation=True,
            csv_lists=True,
        ),
        ApiVersion(
            version="v0.0.40",
            releases="23.11, 24.05, 24.11",
            plugins="openapi/slurmctld,openapi/slurmdbd",
            env_as_list=True,
            wrapped_numbers=True,
            script_in_job=True,
            gpus_field="tres_per_node",
            listing_revalidation=False,
            csv_lists=False,
        ),
        ApiVersion(
            version="v0.0.41",
            releases="24.05, 24.11, 25.05",
            plugins="openapi/slurmctld,openapi/slurmdbd",
            env_as_list=True,
            wrapped_numbers=True,
            script_in_job=True,
            gpus_field="tres_per_node",
            listing_revalidation=False,
            csv_lists=False,
        ),
        ApiVersion(
            version="v0.0.42",
            releases="24.11, 25.05, 25.11",
            plugins="openapi/slurmctld,openapi/slurmdbd",
            env_as_list=True,
            wrapped_numbers=True,
            script_in_job=True,
            gpus_field="tres_per_node",
            listing_revalidation=False,
            csv_lists=False,
        ),
    )
}
SUPPORTED: tuple[str, ...] = tuple(VERSIONS)  # oldest first


def version_key(version: str) -> tuple[int, ...]:
    """ "v0.0.40" -> (0, 0, 40), for ordering; unparsable names sort first."""
    try:
        return tuple(int(part) for part in version.removeprefix("v").split("."))
    except ValueError:
        return (-1,)


def check_pinned(value: Any) -> str | None:
    """Why `value` is not a valid api_version option (None when it is)."""
    if value == AUTO or (isinstance(value, str) and value in VERSIONS):
        return None
    return (
        f"api_version must be {AUTO!r} (the newest version both sides speak) or one of "
        f"{', '.join(SUPPORTED)}; got {value!r}."
    )


def offered(paths: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(slurmctld versions, slurmdbd versions) a slurmrestd serves, from its OpenAPI paths."""
    ctld: set[str] = set()
    dbd: set[str] = set()
    for path in paths:
        match = _PATH_RE.match(str(path))
        if match:
            (ctld if match[1] == "slurm" else dbd).add(match[2])
    return frozenset(ctld), frozenset(dbd)


def choose(paths: Iterable[str], pinned: str = AUTO) -> ApiVersion:
    """The version to speak with a slurmrestd serving `paths`: the pinned one (which it must
    serve), else the newest that both sides speak. UnsupportedVersion names what it offers."""
    ctld, dbd = offered(paths)
    names = tuple(sorted(ctld | dbd, key=version_key))
    shown = ", ".join(names) or "none"
    if pinned != AUTO:
        if pinned not in VERSIONS:
            raise UnsupportedVersion(check_pinned(pinned) or pinned, names)
        if pinned not in ctld:
            raise UnsupportedVersion(
                f"slurmrestd does not serve the pinned api_version {pinned} (it offers: "
                f"{shown}); set api_version to one of those the portal speaks "
                f"({', '.join(SUPPORTED)}) or to {AUTO!r}.",
                names,
            )
        candidates = [pinned]
    else:
        candidates = sorted(ctld & set(VERSIONS), key=version_key, reverse=True)
    if not candidates:
        raise UnsupportedVersion(
            f"slurmrestd offers no API version the portal speaks: it offers {shown}; the portal "
            f"speaks {', '.join(SUPPORTED)} (Slurm 22.05, 23.11 to 25.05).",
            names,
        )
    chosen = VERSIONS[candidates[0]]
    if chosen.version in dbd:
        return chosen
    return dataclasses.replace(chosen, accounting=False)


def _rooted(path: str) -> str:
    return path if path.startswith("/") else "/" + path
