"""A local Kubernetes API server for tests: the subset GPU Commons' backend uses, with
Kubernetes' own object shapes and Status errors, a fake Job controller and a fake kubelet
driven by a controllable clock. The real `kubernetes` client talks to it over HTTP.

Served (JSON unless noted):
    /api/v1/namespaces                               GET list, POST
    /api/v1/namespaces/{ns}                          GET
    /api/v1/namespaces/{ns}/configmaps[/{name}]      POST, GET, PATCH (merge), DELETE
    /api/v1/services                                 GET (all namespaces)
    /api/v1/namespaces/{ns}/services[/{name}]        POST, GET (list), GET, DELETE (a
                                                     ClusterIP Service: ports checked, a
                                                     clusterIP assigned, selector kept)
    /api/v1/namespaces/{ns}/secrets[/{name}]         POST, GET (list), GET, DELETE
                                                     (stringData folded into base64 data)
    /api/v1/resourcequotas                           GET (all namespaces)
    /api/v1/namespaces/{ns}/resourcequotas[/{name}]  POST, GET (list), GET, PUT
    /apis/batch/v1/jobs                              GET (all namespaces)
    /apis/batch/v1/namespaces/{ns}/jobs[/{name}]     POST, GET (list), GET, DELETE
    /api/v1/pods, /api/v1/namespaces/{ns}/pods       GET (list)
    /api/v1/namespaces/{ns}/pods/{name}/log          GET, text/plain (container, limitBytes,
                                                     tailLines)
List calls filter by `labelSelector` (=, ==, !=, in, notin, exists, !exists) and page like
the real API server over etcd: objects in key order (namespace/name), `limit` items a page,
`metadata.continue` (an opaque meta.k8s.io/v1 token) while keys remain after the page and
absent on the last page, `remainingItemCount` only without a selector; continued pages come
from the snapshot the first page saw. `compact()` expires every token handed out (410 Expired,
with an inconsistent-continue token in the Status) and `expire_continue_tokens(n)` does so
just before each of the next n continued requests. Errors are `Status` objects: 401
Unauthorized, 404 NotFound, 409 AlreadyExists, 410 Expired, 422 Invalid (with causes), 400
BadRequest (log of a container that has not started, a bad limit or continue token).

Time only moves with `server.advance(seconds)`. A Job gets its pods at creation (Pending, so
the portal sees it queued); on the next advance the fake kubelet starts them at the current
time and runs the container's program, a tiny shell subset read from `command`
(["/bin/sh", "-c", TEXT], ["/bin/sh", FILE] with FILE from a mounted ConfigMap, or
["echo", ...]); lines are split on newlines and ';':
    echo TEXT            a line of log ($VAR and ${VAR} expand from the container env and
                         JOB_COMPLETION_INDEX)
    echo TEXT > PATH     (or >>) write a file: PATH relative to workingDir, landing on the
                         host under `volumes[claimName] / subPath` when it is on a PVC mount
    sleep S              S seconds pass
    exit N               the container exits with N (default 0 at the end)
Anything else is a command that succeeds at once. activeDeadlineSeconds counts from the
Job's startTime (Failed, reason DeadlineExceeded); backoffLimit is honoured; Indexed Jobs run
`parallelism` indexes at a time. DELETE with propagationPolicy Foreground marks the Job and
its pods deleting (deletionTimestamp, finalizer foregroundDeletion); they disappear on the
next advance (or at once with `foreground_linger=False`). Owned ConfigMaps go with the Job.

ResourceQuotas are validated like the apiserver does (quantities, and extended resources only
with the `requests.` prefix) and enforced by quota admission when the Job controller creates a
Pod: a Pod that would take a namespace past a quota's `pods` or `requests.<resource>` among its
non-terminal Pods is refused (403 "exceeded quota", recorded in `events` as FailedCreate) and
the controller tries again on every advance. Quotas never evict running Pods. `status.used` is
filled in when a quota is read.

`stop()` makes the server refuse connections; `start()` brings it back on the same port.
`requests` records (method, path, query) of every call for counting.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
_QUOTA_RESOURCES = {
    "pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "requests.storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "persistentvolumeclaims",
    "services",
    "services.loadbalancers",
    "services.nodeports",
    "secrets",
    "configmaps",
    "replicationcontrollers",
    "resourcequotas",
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_UNITS = {
    None: 1,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _quantity(value: Any) -> float:
    """A resource quantity ("2", "500m", "4Gi") as a number; ValueError when it is not one."""
    text = str(value).strip()
    negative = text.startswith("-")
    match = _QUANTITY.match(text.lstrip("+-"))
    if not match:
        raise ValueError(text)
    amount = float(match.group(1)) * _UNITS[match.group(2)]
    return -amount if negative else amount


def _format_quantity(amount: float) -> str:
    return str(int(amount)) if float(amount).is_integer() else f"{round(amount * 1000)}m"


def _pod_request(pod: dict[str, Any], resource: str) -> float:
    """What a Pod requests of `resource` (requests, else limits, summed over containers)."""
    total = 0.0
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(
            resource, (resources.get("limits") or {}).get(resource)
        )
        if value is not None:
            total += _quantity(value)
    return total


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.metadata = metadata or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _not_found(resource: str, group: str, name: str) -> ApiError:
    plural = f"{resource}.{group}" if group else resource
    return ApiError(
        404,
        "NotFound",
        f'{plural} "{name}" not found',
        details={"name": name, "group": group, "kind": resource},
    )


_CONTINUE_VERSION = "meta.k8s.io/v1"
# The apiserver's own words (k8s.io/apiserver/pkg/storage/etcd3).
_INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


def encode_continue(start: str, version: int) -> str:
    """A continue token as the apiserver makes it: unpadded URL-safe base64 of its JSON."""
    raw = json.dumps({"v": _CONTINUE_VERSION, "rv": version, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_continue(token: str) -> tuple[str, int]:
    """(start key, resourceVersion) of a continue token; 400 BadRequest when it is not one."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        version, rv, start = data["v"], data["rv"], data["start"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from exc
    if version != _CONTINUE_VERSION or not isinstance(rv, int) or rv == 0:
        raise ApiError(400, "BadRequest", "invalid continue token: bad version")
    if not isinstance(start, str) or not start or ".." in start.split("/"):
        raise ApiError(400, "BadRequest", f"invalid continue token: bad start key {start!r}")
    return start, rv


def parse_selector(selector: str) -> list[tuple[str, str, set[str]]]:
    """Requirements (key, op, values) of a label selector; op in =, !=, in, notin, exists, !."""
    requirements: list[tuple[str, str, set[str]]] = []
    for part in re.findall(r"(?:[^,(]|\([^)]*\))+", selector or ""):
        part = part.strip()
        if not part:
            continue
        if match := re.match(r"^(\S+)\s+(in|notin)\s+\(([^)]*)\)$", part):
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            requirements.append((match.group(1), match.group(2), values))
        elif match := re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$", part):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append((match.group(1), op, {match.group(3)}))
        elif part.startswith("!"):
            requirements.append((part[1:].strip(), "!", set()))
        elif _LABEL_KEY.match(part):
            requirements.append((part, "exists", set()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return requirements


def selector_matches(requirements: list[tuple[str, str, set[str]]], labels: dict[str, str]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        ok = {
            "=": present and value in values,
            "in": present and value in values,
            "!=": not present or value not in values,
            "notin": not present or value not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


@dataclass
class Run:
    """One container's run: its log lines and file writes at offsets from its start."""

    started: datetime
    duration: float
    exit_code: int
    log: list[tuple[float, str]] = field(default_factory=list)
    writes: list[tuple[float, Path, str, bool]] = field(default_factory=list)
    written: int = 0

    @property
    def ends(self) -> datetime:
        return self.started + timedelta(seconds=self.duration)


class FakeKubernetes:
    """The API server, the Job controller and the kubelet, in one object."""

    def __init__(
        self,
        *,
        token: str | None = None,
        volumes: dict[str, Path] | None = None,
        foreground_linger: bool = True,
    ) -> None:
        self.token = token
        self.volumes = dict(volumes or {})  # PVC claimName -> directory on this host
        self.foreground_linger = foreground_linger
        self.now = datetime.now(tz=UTC).replace(microsecond=0)
        self.lock = threading.RLock()
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._next_ip = 1
        self.quotas: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.runs: dict[tuple[str, str], Run] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.deletions: list[tuple[str, str, str]] = []  # (namespace, job, propagation)
        self.created_jobs: list[dict[str, Any]] = []  # every accepted Job body, as sent
        self.faults: list[tuple[str, re.Pattern[str], int, bool, str | None]] = []
        # (namespace, involved object, reason, message), like `kubectl get events`.
        self.events: list[tuple[str, str, str, str]] = []
        self._pods_refused: set[tuple[str, str]] = set()  # Jobs to retry pod creation for
        self._version = 0
        # What paged lists continue from, like etcd's history: (resource, rv) -> key -> object.
        self._snapshots: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
        self._compact_before_continue = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKubernetes:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the socket: connections are refused until start() again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        code: int,
        *,
        after: bool = False,
        message: str | None = None,
    ) -> None:
        """Answer the next matching request with `code` (e.g. 500, 403) instead, as a Status
        carrying `message`; with `after`, carry the request out first (the answer is what
        gets lost)."""
        self.faults.append((method.upper(), re.compile(path_pattern), code, after, message))

    def compact(self) -> None:
        """Compact the history: every continue token handed out so far answers 410 Expired."""
        with self.lock:
            self._snapshots.clear()

    def expire_continue_tokens(self, times: int = 1) -> None:
        """Compact just before each of the next `times` requests carrying a continue token, so
        the token each of them carries has expired."""
        with self.lock:
            self._compact_before_continue = times

    def calls(self, method: str | None = None, path: str | None = None) -> list[str]:
        """Paths of recorded requests, filtered by method and exact path or regex."""
        with self.lock:
            return [
                p
                for m, p, _ in self.requests
                if (method is None or m == method)
                and (path is None or p == path or re.fullmatch(path, p))
            ]

    # -- the API --------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, auth: str | None
    ) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, query))
            fault = None
            for i, (fault_method, pattern, code, after, message) in enumerate(self.faults):
                if fault_method == method and pattern.fullmatch(path):
                    del self.faults[i]
                    reason = {422: "Invalid", 409: "Conflict", 404: "NotFound"}.get(
                        code, "InternalError" if code >= 500 else "Forbidden"
                    )
                    fault = ApiError(code, reason, message or f"injected fault {code}")
                    if not after:
                        raise fault
                    break
            if self.token is not None and auth != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            answer = self._route(method, path, {k: v[-1] for k, v in query.items()}, body)
            if fault is not None:
                raise fault
            return answer

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        for pattern, handlers in self._routes():
            match = re.fullmatch(pattern, path)
            if match:
                handler = handlers.get(method)
                if handler is None:
                    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")
                return handler(*match.groups(), query=query, body=body)  # type: ignore[no-any-return]
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _routes(self) -> list[tuple[str, dict[str, Any]]]:
        ns = r"([^/]+)"
        return [
            (r"/api/v1/namespaces", {"GET": self._list_namespaces, "POST": self._create_ns}),
            (rf"/api/v1/namespaces/{ns}", {"GET": self._read_ns}),
            (rf"/api/v1/namespaces/{ns}/configmaps", {"POST": self._create_cm}),
            (
                rf"/api/v1/namespaces/{ns}/configmaps/{ns}",
                {"GET": self._read_cm, "DELETE": self._delete_cm, "PATCH": self._patch_cm},
            ),
            (r"/api/v1/services", {"GET": self._list_services}),
            (
                rf"/api/v1/namespaces/{ns}/services",
                {"GET": self._list_services, "POST": self._create_service},
            ),
            (
                rf"/api/v1/namespaces/{ns}/services/{ns}",
                {"GET": self._read_service, "DELETE": self._delete_service},
            ),
            (
                rf"/api/v1/namespaces/{ns}/secrets",
                {"GET": self._list_secrets, "POST": self._create_secret},
            ),
            (
                rf"/api/v1/namespaces/{ns}/secrets/{ns}",
                {"GET": self._read_secret, "DELETE": self._delete_secret},
            ),
            (r"/api/v1/resourcequotas", {"GET": self._list_quotas}),
            (
                rf"/api/v1/namespaces/{ns}/resourcequotas",
                {"GET": self._list_quotas, "POST": self._create_quota},
            ),
            (
                rf"/api/v1/namespaces/{ns}/resourcequotas/{ns}",
                {"GET": self._read_quota, "PUT": self._replace_quota},
            ),
            (r"/apis/batch/v1/jobs", {"GET": self._list_jobs}),
            (
                rf"/apis/batch/v1/namespaces/{ns}/jobs",
                {"GET": self._list_jobs, "POST": self._create_job},
            ),
            (
                rf"/apis/batch/v1/namespaces/{ns}/jobs/{ns}",
                {"GET": self._read_job, "DELETE": self._delete_job},
            ),
            (r"/api/v1/pods", {"GET": self._list_pods}),
            (rf"/api/v1/namespaces/{ns}/pods", {"GET": self._list_pods}),
            (rf"/api/v1/namespaces/{ns}/pods/{ns}/log", {"GET": self._pod_log}),
        ]

    def _meta(self, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400, "BadRequest", "the namespace of the provided object does not match"
                )
            meta["namespace"] = namespace
        self._version += 1
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(self._version),
            creationTimestamp=_ts(self.now),
        )
        return obj

    def _validate_meta(self, obj: dict[str, Any], kind: str, *, label_name: bool) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        causes = []
        pattern = _DNS_LABEL if label_name else _DNS_SUBDOMAIN
        if not name or len(name) > (63 if label_name else 253) or not pattern.match(name):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f'Invalid value: "{name}": a lowercase RFC 1123 '
                    + ("label" if label_name else "subdomain")
                    + " must consist of lower case alphanumeric characters, '-' or '.'",
                    "field": "metadata.name",
                }
            )
        for key, value in (meta.get("labels") or {}).items():
            if not _LABEL_KEY.match(key) or len(key.split("/")[-1]) > 63:
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{key}": name part must be valid',
                        "field": "metadata.labels",
                    }
                )
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{value}": a valid label must be an empty '
                        "string or consist of alphanumeric characters, '-', '_' or '.'",
                        "field": "metadata.labels",
                    }
                )
        if causes:
            group = "batch" if kind == "Job" else ""
            raise ApiError(
                422,
                "Invalid",
                f'{kind}{"." + group if group else ""} "{name}" is invalid: '
                + ", ".join(f"{c['field']}: {c['message']}" for c in causes),
                details={"name": name, "group": group, "kind": kind, "causes": causes},
            )

    def _need_ns(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise _not_found("namespaces", "", namespace)

    def _stored(self, resource: str) -> dict[str, dict[str, Any]]:
        """A resource's objects by etcd key (/registry/<resource>/[<namespace>/]<name>)."""
        if resource == "namespaces":
            return {f"/registry/namespaces/{name}": o for name, o in self.namespaces.items()}
        store = {
            "jobs": self.jobs,
            "pods": self.pods,
            "resourcequotas": self.quotas,
            "services": self.services,
            "secrets": self.secrets,
        }[resource]
        return {f"/registry/{resource}/{ns}/{name}": o for (ns, name), o in store.items()}

    def _list(
        self,
        kind: str,
        api_version: str,
        resource: str,
        namespace: str | None,
        query: dict[str, str],
    ) -> tuple[int, Any]:
        """A list answer, paged like the apiserver's etcd3 storage (see the module docstring)."""
        prefix = f"/registry/{resource}/" + (f"{namespace}/" if namespace else "")
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid limit: {exc}") from exc
        requirements = parse_selector(query.get("labelSelector", ""))
        version, start = self._version, prefix
        objects: dict[str, dict[str, Any]] | None = None
        if token := query.get("continue"):
            start_key, token_version = decode_continue(token)
            start = prefix + start_key
            if self._compact_before_continue:
                self._compact_before_continue -= 1
                self._snapshots.clear()
            if token_version != -1:  # -1: carry on from the latest state, knowingly inconsistent
                version = token_version
                objects = self._snapshots.get((resource, version))
                if objects is None:
                    raise ApiError(
                        410,
                        "Expired",
                        _INCONSISTENT_CONTINUE,
                        metadata={"continue": encode_continue(start_key, -1)},
                    )
        live = objects is None
        if objects is None:
            objects = self._stored(resource)
        keys = sorted(k for k in objects if k.startswith(prefix) and k >= start)
        items: list[dict[str, Any]] = []
        examined = 0
        for key in keys:
            if limit and len(items) == limit:
                break
            examined += 1
            labels = (objects[key].get("metadata") or {}).get("labels") or {}
            if selector_matches(requirements, labels):
                items.append(copy.deepcopy(objects[key]))
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if examined < len(keys):  # the page is full and keys remain after it
            next_key = keys[examined - 1][len(prefix) :] + "\x00"
            metadata["continue"] = encode_continue(next_key, version)
            if not requirements:
                metadata["remainingItemCount"] = len(keys) - examined
            if live:  # later pages are read from this moment's state
                self._snapshots[(resource, version)] = copy.deepcopy(objects)
        return 200, {
            "kind": kind,
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items,
        }

    # namespaces
    def _list_namespaces(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return self._list("NamespaceList", "v1", "namespaces", None, query)

    def _create_ns(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._validate_meta(body, "Namespace", label_name=True)
        name = body["metadata"]["name"]
        if name in self.namespaces:
            raise ApiError(
                409,
                "AlreadyExists",
                f'namespaces "{name}" already exists',
                details={"name": name, "kind": "namespaces"},
            )
        obj = self._meta(body, None)
        obj.update(apiVersion="v1", kind="Namespace")
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        self.namespaces[name] = obj
        return 201, copy.deepcopy(obj)

    def _read_ns(self, name: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._need_ns(name)
        return 200, copy.deepcopy(self.namespaces[name])

    # configmaps
    def _create_cm(self, namespace: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._need_ns(namespace)
        self._validate_meta(body, "ConfigMap", label_name=False)
        key = (namespace, body["metadata"]["name"])
        if key in self.configmaps:
            raise ApiError(
                409,
                "AlreadyExists",
                f'configmaps "{key[1]}" already exists',
                details={"name": key[1], "kind": "configmaps"},
            )
        obj = self._meta(body, namespace)
        obj.update(apiVersion="v1", kind="ConfigMap")
        self.configmaps[key] = obj
        return 201, copy.deepcopy(obj)

    def _read_cm(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if (namespace, name) not in self.configmaps:
            raise _not_found("configmaps", "", name)
        return 200, copy.deepcopy(self.configmaps[(namespace, name)])

    def _patch_cm(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        """A merge patch of metadata labels/annotations/ownerReferences and data."""
        obj = self.configmaps.get((namespace, name))
        if obj is None:
            raise _not_found("configmaps", "", name)
        patch = body or {}
        meta = patch.get("metadata") or {}
        for key in ("labels", "annotations"):
            if key in meta:
                obj["metadata"].setdefault(key, {}).update(meta[key])
        if "ownerReferences" in meta:
            obj["metadata"]["ownerReferences"] = copy.deepcopy(meta["ownerReferences"])
        if "data" in patch:
            obj.setdefault("data", {}).update(patch["data"])
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        return 200, copy.deepcopy(obj)

    def _delete_cm(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if self.configmaps.pop((namespace, name), None) is None:
            raise _not_found("configmaps", "", name)
        return 200, _success(name, "configmaps")

    # services
    def _create_service(
        self, namespace: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        self._need_ns(namespace)
        # A Service name is a DNS-1035 label: a letter first.
        self._validate_meta(body, "Service", label_name=True)
        name = body["metadata"]["name"]
        spec = body.get("spec") or {}
        causes = []
        if not name[:1].isalpha():
            causes.append(("metadata.name", f'Invalid value: "{name}": a DNS-1035 label'))
        ports = spec.get("ports") or []
        if not ports:
            causes.append(("spec.ports", "Required value"))
        for i, port in enumerate(ports):
            number = port.get("port")
            if not isinstance(number, int) or not 0 < number < 65536:
                causes.append((f"spec.ports[{i}].port", f"Invalid value: {number!r}"))
            if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                causes.append((f"spec.ports[{i}].protocol", "Unsupported value"))
            if len(ports) > 1 and not port.get("name"):
                causes.append((f"spec.ports[{i}].name", "Required value"))
        if spec.get("type", "ClusterIP") not in ("ClusterIP", "NodePort", "LoadBalancer"):
            causes.append(("spec.type", "Unsupported value"))
        if causes:
            raise ApiError(
                422,
                "Invalid",
                f'Service "{name}" is invalid: ' + ", ".join(f"{f}: {m}" for f, m in causes),
                details={
                    "name": name,
                    "group": "",
                    "kind": "Service",
                    "causes": [
                        {"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in causes
                    ],
                },
            )
        key = (namespace, name)
        if key in self.services:
            raise ApiError(
                409,
                "AlreadyExists",
                f'services "{name}" already exists',
                details={"name": name, "kind": "services"},
            )
        obj = self._meta(body, namespace)
        obj.update(apiVersion="v1", kind="Service")
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        ip = f"10.96.{self._next_ip // 256}.{self._next_ip % 256}"
        self._next_ip += 1
        spec.update(clusterIP=ip, clusterIPs=[ip], ipFamilies=["IPv4"])
        for port in spec["ports"]:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port["port"])
        obj["status"] = {"loadBalancer": {}}
        self.services[key] = obj
        return 201, copy.deepcopy(obj)

    def _read_service(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if (namespace, name) not in self.services:
            raise _not_found("services", "", name)
        return 200, copy.deepcopy(self.services[(namespace, name)])

    def _list_services(
        self, namespace: str | None = None, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        return self._list("ServiceList", "v1", "services", namespace, query)

    def _delete_service(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        # The apiserver answers a deleted Service with the object as it was.
        obj = self.services.pop((namespace, name), None)
        if obj is None:
            raise _not_found("services", "", name)
        return 200, copy.deepcopy(obj)

    # secrets
    def _create_secret(
        self, namespace: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        self._need_ns(namespace)
        self._validate_meta(body, "Secret", label_name=False)
        key = (namespace, body["metadata"]["name"])
        if key in self.secrets:
            raise ApiError(
                409,
                "AlreadyExists",
                f'secrets "{key[1]}" already exists',
                details={"name": key[1], "kind": "secrets"},
            )
        obj = self._meta(body, namespace)
        obj.update(apiVersion="v1", kind="Secret")
        obj.setdefault("type", "Opaque")
        data = dict(obj.get("data") or {})
        for name, value in (obj.pop("stringData", None) or {}).items():
            data[name] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
        self.secrets[key] = obj
        return 201, copy.deepcopy(obj)

    def _read_secret(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if (namespace, name) not in self.secrets:
            raise _not_found("secrets", "", name)
        return 200, copy.deepcopy(self.secrets[(namespace, name)])

    def _list_secrets(
        self, namespace: str | None = None, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        return self._list("SecretList", "v1", "secrets", namespace, query)

    def _delete_secret(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if self.secrets.pop((namespace, name), None) is None:
            raise _not_found("secrets", "", name)
        return 200, _success(name, "secrets")

    # resource quotas
    def _validate_quota(self, body: Any) -> None:
        """spec.hard as the apiserver validates it: quota resource names (an extended resource
        only as requests.<name>: it cannot be overcommitted) and non-negative quantities."""
        name = (body.get("metadata") or {}).get("name", "")
        causes = []
        for key, value in ((body.get("spec") or {}).get("hard") or {}).items():
            field = f"spec.hard[{key}]"
            extended = key.startswith("requests.") and "/" in key
            if key not in _QUOTA_RESOURCES and not extended and not key.startswith("count/"):
                causes.append(
                    (field, f'Invalid value: "{key}": must be a standard resource for quota')
                )
            try:
                amount = _quantity(value)
            except ValueError:
                causes.append(
                    (
                        field,
                        f'Invalid value: "{value}": quantities must match the regular expression',
                    )
                )
                continue
            if amount < 0:
                causes.append(
                    (field, f'Invalid value: "{value}": must be greater than or equal to 0')
                )
        if causes:
            raise ApiError(
                422,
                "Invalid",
                f'ResourceQuota "{name}" is invalid: ' + ", ".join(f"{f}: {m}" for f, m in causes),
                details={
                    "name": name,
                    "kind": "ResourceQuota",
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
                    ],
                },
            )

    def _create_quota(self, namespace: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._need_ns(namespace)
        self._validate_meta(body, "ResourceQuota", label_name=False)
        self._validate_quota(body)
        key = (namespace, body["metadata"]["name"])
        if key in self.quotas:
            raise ApiError(
                409,
                "AlreadyExists",
                f'resourcequotas "{key[1]}" already exists',
                details={"name": key[1], "kind": "resourcequotas"},
            )
        obj = self._meta(body, namespace)
        obj.update(apiVersion="v1", kind="ResourceQuota")
        obj.setdefault("spec", {}).setdefault("hard", {})
        obj["status"] = {"hard": dict(obj["spec"]["hard"]), "used": {}}
        self.quotas[key] = obj
        return 201, self._with_usage(obj)

    def _read_quota(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if (namespace, name) not in self.quotas:
            raise _not_found("resourcequotas", "", name)
        return 200, self._with_usage(self.quotas[(namespace, name)])

    def _list_quotas(
        self, namespace: str | None = None, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        for quota in self.quotas.values():
            quota["status"]["used"] = self._quota_used(quota)
        return self._list("ResourceQuotaList", "v1", "resourcequotas", namespace, query)

    def _replace_quota(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        """PUT: the whole object is replaced (labels, annotations, spec); a resourceVersion in
        the body must be the current one (409 Conflict otherwise)."""
        if (namespace, name) not in self.quotas:
            raise _not_found("resourcequotas", "", name)
        meta = (body or {}).get("metadata") or {}
        if meta.get("name") != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        self._validate_meta(body, "ResourceQuota", label_name=False)
        self._validate_quota(body)
        obj = self.quotas[(namespace, name)]
        version = meta.get("resourceVersion")
        if version and version != obj["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on resourcequotas "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        for key in ("labels", "annotations"):
            obj["metadata"][key] = dict(meta.get(key) or {})
        obj["spec"] = copy.deepcopy(body.get("spec") or {})
        obj["spec"].setdefault("hard", {})
        obj["status"]["hard"] = dict(obj["spec"]["hard"])
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        return 200, self._with_usage(obj)

    def _quota_used(self, quota: dict[str, Any]) -> dict[str, str]:
        namespace = quota["metadata"]["namespace"]
        live = [
            p
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["status"]["phase"] in ("Pending", "Running")
        ]
        used: dict[str, str] = {}
        for key in quota["spec"].get("hard") or {}:
            if key == "pods":
                used[key] = str(len(live))
            elif key.startswith("requests."):
                total = sum(_pod_request(p, key[len("requests.") :]) for p in live)
                used[key] = _format_quantity(total)
        return used

    def _with_usage(self, quota: dict[str, Any]) -> dict[str, Any]:
        quota["status"]["used"] = self._quota_used(quota)
        return copy.deepcopy(quota)

    def _admit_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        """Quota admission of a new Pod: 403 when it would exceed any quota of its namespace."""
        for (ns, name), quota in sorted(self.quotas.items()):
            if ns != namespace:
                continue
            hard = quota["spec"].get("hard") or {}
            used = self._quota_used(quota)
            exceeded = []
            for key, limit in hard.items():
                if key == "pods":
                    asked = 1.0
                elif key.startswith("requests."):
                    asked = _pod_request(pod, key[len("requests.") :])
                else:
                    continue
                if asked and _quantity(used.get(key, "0")) + asked > _quantity(limit):
                    exceeded.append((key, asked, used.get(key, "0"), limit))
            if exceeded:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'pods "{pod["metadata"]["name"]}" is forbidden: exceeded quota: {name}, '
                    "requested: "
                    + ",".join(f"{k}={_format_quantity(a)}" for k, a, _, _ in exceeded)
                    + ", used: "
                    + ",".join(f"{k}={u}" for k, _, u, _ in exceeded)
                    + ", limited: "
                    + ",".join(f"{k}={h}" for k, _, _, h in exceeded),
                )

    # jobs
    def _list_jobs(
        self, namespace: str | None = None, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        return self._list("JobList", "batch/v1", "jobs", namespace, query)

    def _read_job(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if (namespace, name) not in self.jobs:
            raise _not_found("jobs", "batch", name)
        return 200, copy.deepcopy(self.jobs[(namespace, name)])

    def _create_job(self, namespace: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._need_ns(namespace)
        self._validate_meta(body, "Job", label_name=True)
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise ApiError(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                details={"name": name, "group": "batch", "kind": "jobs"},
            )
        spec = body.get("spec") or {}
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        causes = []
        if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
            causes.append(("spec.template.spec.restartPolicy", "Unsupported value"))
        if not pod_spec.get("containers") or not all(
            c.get("image") for c in pod_spec["containers"]
        ):
            causes.append(("spec.template.spec.containers", "Required value"))
        if spec.get("completionMode") == "Indexed" and not spec.get("completions"):
            causes.append(("spec.completions", "Required value: when completionMode is Indexed"))
        for c in pod_spec.get("containers") or []:
            resources = c.get("resources") or {}
            for key, value in (resources.get("requests") or {}).items():
                if "/" in key and (resources.get("limits") or {}).get(key) != value:
                    causes.append(
                        (
                            f"spec.template.spec.containers[0].resources.requests[{key}]",
                            f"Invalid value: must be equal to {key} limit",
                        )
                    )
        if causes:
            raise ApiError(
                422,
                "Invalid",
                f'Job.batch "{name}" is invalid: ' + ", ".join(f"{f}: {m}" for f, m in causes),
                details={
                    "name": name,
                    "group": "batch",
                    "kind": "Job",
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
                    ],
                },
            )
        self.created_jobs.append(copy.deepcopy(body))
        job = self._meta(body, namespace)
        job.update(apiVersion="batch/v1", kind="Job")
        meta = job["metadata"]
        meta["generation"] = 1
        uid = meta["uid"]
        spec = job["spec"]
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        template_labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
        job["status"] = {}
        self.jobs[(namespace, name)] = job
        if spec["suspend"]:
            job["status"]["conditions"] = [self._cond("Suspended", "JobSuspended", "Job suspended")]
        else:
            job["status"].update(startTime=_ts(self.now), active=0, ready=0, terminating=0)
            self._spawn_pods(job)
        return 201, copy.deepcopy(job)

    def _delete_job(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        job = self.jobs.get((namespace, name))
        if job is None:
            raise _not_found("jobs", "batch", name)
        policy = (
            (body or {}).get("propagationPolicy")
            or query.get("propagationPolicy")
            or ("Background")
        )
        self.deletions.append((namespace, name, policy))
        if policy == "Foreground" and self.foreground_linger:
            meta = job["metadata"]
            meta.setdefault("deletionTimestamp", _ts(self.now))
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = ["foregroundDeletion"]
            for pod in self._pods_of(job):
                self._kill(pod, reason="Terminating")
                pod["metadata"]["deletionTimestamp"] = _ts(self.now)
            return 200, copy.deepcopy(job)
        self._remove_job((namespace, name), keep_pods=policy == "Orphan")
        return 200, _success(name, "jobs", "batch")

    def _remove_job(self, key: tuple[str, str], *, keep_pods: bool = False) -> None:
        job = self.jobs.pop(key)
        uid = job["metadata"]["uid"]
        if not keep_pods:
            for pod_key in [k for k, p in self.pods.items() if _owner_uid(p) == uid]:
                self.pods.pop(pod_key)
                self.runs.pop(pod_key, None)
        for store in (self.configmaps, self.services, self.secrets):
            for owned in [k for k, o in store.items() if _owner_uid(o) == uid]:
                store.pop(owned)

    # pods
    def _list_pods(
        self, namespace: str | None = None, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        return self._list("PodList", "v1", "pods", namespace, query)

    def _pod_log(
        self, namespace: str, name: str, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise _not_found("pods", "", name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or containers[0]
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        run = self.runs.get((namespace, name))
        if run is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        elapsed = (min(self.now, run.ends) - run.started).total_seconds()
        lines = [text + "\n" for offset, text in run.log if offset <= elapsed]
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        data = "".join(lines).encode()
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"])]
        return 200, data

    # -- the Job controller and the kubelet ------------------------------------------------

    def _cond(self, kind: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": _ts(self.now),
            "lastTransitionTime": _ts(self.now),
        }

    def _pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [p for p in self.pods.values() if _owner_uid(p) == uid]

    def _spawn_pods(self, job: dict[str, Any]) -> None:
        """Create pods up to `parallelism` for indexes not yet run (the Job controller)."""
        spec = job["spec"]
        status = job["status"]
        if _finished(job) or job["metadata"].get("deletionTimestamp"):
            return
        pods = self._pods_of(job)
        running = [p for p in pods if p["status"]["phase"] in ("Pending", "Running")]
        indexed = spec["completionMode"] == "Indexed"
        used = {_index(p) for p in pods if p["status"]["phase"] != "Failed"}
        free = [i for i in range(spec["completions"]) if i not in used]
        if not indexed:
            done = sum(1 for p in pods if p["status"]["phase"] == "Succeeded")
            free = list(range(max(0, spec["completions"] - done - len(running))))
        slots = min(spec["parallelism"], spec["completions"]) - len(running)
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        self._pods_refused.discard(key)
        for index in free[: max(0, slots)]:
            try:
                self._make_pod(job, index if indexed else None)
            except ApiError as exc:  # quota admission: the controller retries later
                self._pods_refused.add(key)
                self.events.append((key[0], f"job/{key[1]}", "FailedCreate", exc.message))
                break
        status["active"] = len(
            [p for p in self._pods_of(job) if p["status"]["phase"] in ("Pending", "Running")]
        )

    def _make_pod(self, job: dict[str, Any], index: int | None) -> None:
        meta = job["metadata"]
        name = meta["name"]
        suffix = secrets.token_hex(3)[:5]
        pod_name = f"{name}-{index}-{suffix}" if index is not None else f"{name}-{suffix}"
        template = copy.deepcopy(job["spec"]["template"])
        labels = template.get("metadata", {}).get("labels", {})
        annotations = dict(template.get("metadata", {}).get("annotations") or {})
        if index is not None:
            labels[INDEX_KEY] = str(index)
            annotations[INDEX_KEY] = str(index)
        self._version += 1
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "generateName": pod_name[: -len(suffix)],
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(self._version),
                "creationTimestamp": _ts(self.now),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": ["batch.kubernetes.io/job-tracking"],
            },
            "spec": template["spec"],
            "status": {
                "phase": "Pending",
                "qosClass": "Guaranteed",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": _ts(self.now)}
                ],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                        "lastState": {},
                    }
                    for c in template["spec"]["containers"]
                ],
            },
        }
        self._admit_pod(meta["namespace"], pod)
        self.pods[(meta["namespace"], pod_name)] = pod

    def _start_pending(self) -> None:
        for key, pod in list(self.pods.items()):
            if pod["status"]["phase"] != "Pending" or pod["metadata"].get("deletionTimestamp"):
                continue
            program = self._program(pod)
            if program is None:
                continue  # a ConfigMap volume is missing: the kubelet keeps retrying the mount
            self.runs[key] = self._run(pod, program)
            pod["status"].update(phase="Running", startTime=_ts(self.now), hostIP="10.0.0.7")
            status = pod["status"]["containerStatuses"][0]
            status.update(ready=True, started=True, state={"running": {"startedAt": _ts(self.now)}})
            pod["status"]["conditions"].append(
                {"type": "Ready", "status": "True", "lastTransitionTime": _ts(self.now)}
            )
            job = self._job_of(pod)
            if job is not None:
                job["status"]["ready"] = job["status"].get("ready", 0) + 1

    def _job_of(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        uid = _owner_uid(pod)
        return next((j for j in self.jobs.values() if j["metadata"]["uid"] == uid), None)

    def _program(self, pod: dict[str, Any]) -> str | None:
        container = pod["spec"]["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if not command:
            return ""
        shells = ("/bin/sh", "sh", "/bin/bash", "bash")
        if command[0] in shells and len(command) >= 3 and command[1] == "-c":
            return str(command[2])
        if command[0] in shells and len(command) >= 2:
            for mount in container.get("volumeMounts") or []:
                prefix = mount["mountPath"].rstrip("/") + "/"
                if not command[1].startswith(prefix):
                    continue
                volume = next(
                    (v for v in pod["spec"].get("volumes") or [] if v["name"] == mount["name"]),
                    None,
                )
                if volume and "configMap" in volume:
                    cm = self.configmaps.get(
                        (pod["metadata"]["namespace"], volume["configMap"]["name"])
                    )
                    if cm is None:
                        return None
                    return str((cm.get("data") or {}).get(command[1][len(prefix) :], ""))
            return ""
        if command[0].endswith("echo"):
            return "echo " + " ".join(command[1:])
        return ""

    def _run(self, pod: dict[str, Any], program: str) -> Run:
        container = pod["spec"]["containers"][0]
        env: dict[str, str] = {}
        index = (pod["metadata"].get("annotations") or {}).get(INDEX_KEY)
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = index
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif INDEX_KEY in json.dumps(item.get("valueFrom", {})) and index is not None:
                env[item["name"]] = index
            elif ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                secret = self.secrets.get((pod["metadata"]["namespace"], ref["name"]))
                value = ((secret or {}).get("data") or {}).get(ref["key"])
                if value is not None:
                    env[item["name"]] = base64.b64decode(value).decode()
        run = Run(started=self.now, duration=0, exit_code=0)
        clock = 0.0
        for raw in re.split(r"[;\n]", program):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            line = re.sub(
                r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), line
            )
            word, _, rest = line.partition(" ")
            if word == "echo":
                if match := re.match(r"^(.*?)\s*(>>?)\s*(\S+)$", rest):
                    target = self._host_path(pod, container, match.group(3))
                    text = _unquote(match.group(1)) + "\n"
                    if target is not None:
                        run.writes.append((clock, target, text, match.group(2) == ">>"))
                else:
                    run.log.append((clock, _unquote(rest)))
            elif word == "sleep":
                clock += float(rest or 0)
            elif word == "exit":
                run.exit_code = int(rest or 0)
                break
        run.duration = clock
        return run

    def _host_path(self, pod: dict[str, Any], container: dict[str, Any], path: str) -> Path | None:
        """Where a path inside the container lands on this host (None: ephemeral storage)."""
        if not path.startswith("/"):
            path = container.get("workingDir", "/").rstrip("/") + "/" + path
        if ".." in path.split("/"):
            return None
        for mount in container.get("volumeMounts") or []:
            root = mount["mountPath"].rstrip("/")
            if path != root and not path.startswith(root + "/"):
                continue
            volume = next(
                (v for v in pod["spec"].get("volumes") or [] if v["name"] == mount["name"]), None
            )
            claim = ((volume or {}).get("persistentVolumeClaim") or {}).get("claimName")
            if claim in self.volumes:
                base = self.volumes[claim] / mount.get("subPath", "")
                return base / path[len(root) :].lstrip("/")
        return None

    def _kill(self, pod: dict[str, Any], *, reason: str, exit_code: int = 137) -> None:
        if pod["status"]["phase"] not in ("Pending", "Running"):
            return
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        run = self.runs.get(key)
        if run is not None:
            run.duration = min(run.duration, (self.now - run.started).total_seconds())
        self._terminate(pod, exit_code=exit_code, reason="Error", pod_reason=reason)

    def _terminate(
        self, pod: dict[str, Any], *, exit_code: int, reason: str, pod_reason: str = ""
    ) -> None:
        was_running = pod["status"]["phase"] == "Running"
        phase = "Succeeded" if exit_code == 0 and not pod_reason else "Failed"
        started = pod["status"].get("startTime") or _ts(self.now)
        pod["status"]["phase"] = phase
        if pod_reason:
            pod["status"]["reason"] = pod_reason
        pod["status"]["conditions"] = [
            c for c in pod["status"]["conditions"] if c["type"] != "Ready"
        ]
        pod["status"]["containerStatuses"][0].update(
            ready=False,
            started=False,
            state={
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": _ts(self.now),
                    "containerID": f"containerd://{secrets.token_hex(8)}",
                }
            },
        )
        job = self._job_of(pod)
        if job is not None and was_running:
            job["status"]["ready"] = max(0, job["status"].get("ready", 0) - 1)

    def _next_event(self, until: datetime) -> tuple[datetime, Any] | None:
        events: list[tuple[datetime, int, Any]] = []
        for key, run in self.runs.items():
            pod = self.pods.get(key)
            if pod is None or pod["status"]["phase"] != "Running":
                continue
            for offset, path, text, append in run.writes[run.written :]:
                events.append(
                    (run.started + timedelta(seconds=offset), 0, ("write", run, path, text, append))
                )
                break
            events.append((run.ends, 1, ("exit", pod, run)))
        for job in self.jobs.values():
            deadline = job["spec"].get("activeDeadlineSeconds")
            start = job["status"].get("startTime")
            if deadline and start and not _finished(job):
                moment = datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(
                    seconds=deadline
                )
                events.append((moment, 2, ("deadline", job)))
        events = [e for e in events if e[0] <= until]
        if not events:
            return None
        moment, _, action = min(events, key=lambda e: (e[0], e[1]))
        return moment, action

    def advance(self, seconds: float) -> None:
        """Move the clock: start pending pods, run programs, finish Jobs, honour deadlines."""
        with self.lock:
            until = self.now + timedelta(seconds=seconds)
            self._reap()
            for key in sorted(self._pods_refused):  # the Job controller's retries
                if key in self.jobs:
                    self._spawn_pods(self.jobs[key])
                else:
                    self._pods_refused.discard(key)
            self._start_pending()
            while (event := self._next_event(until)) is not None:
                moment, action = event
                self.now = max(self.now, moment)
                kind = action[0]
                if kind == "write":
                    _, run, path, text, append = action
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("a" if append else "w") as handle:
                        handle.write(text)
                    run.written += 1
                elif kind == "exit":
                    _, pod, run = action
                    self._terminate(
                        pod,
                        exit_code=run.exit_code,
                        reason="Completed" if run.exit_code == 0 else "Error",
                    )
                    self._pod_finished(pod)
                elif kind == "deadline":
                    self._fail_job(
                        action[1],
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    )
                self._start_pending()
            self.now = until
            self._expire_finished()
            # Status writes are new resourceVersions: lists before and after differ in theirs.
            self._version += 1

    def _pod_finished(self, pod: dict[str, Any]) -> None:
        job = self._job_of(pod)
        if job is None or _finished(job):
            return
        status = job["status"]
        spec = job["spec"]
        pods = self._pods_of(job)
        status["succeeded"] = sum(1 for p in pods if p["status"]["phase"] == "Succeeded")
        status["failed"] = sum(1 for p in pods if p["status"]["phase"] == "Failed")
        if spec["completionMode"] == "Indexed":
            done = sorted(_index(p) for p in pods if p["status"]["phase"] == "Succeeded")
            status["completedIndexes"] = ",".join(str(i) for i in done)
        if status["failed"] > spec["backoffLimit"]:
            self._fail_job(
                job, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
            return
        if status["succeeded"] >= spec["completions"]:
            status["active"] = 0
            status["ready"] = 0
            status["completionTime"] = _ts(self.now)
            status["conditions"] = [
                self._cond(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                self._cond(
                    "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
                ),
            ]
            return
        self._spawn_pods(job)

    def _fail_job(self, job: dict[str, Any], reason: str, message: str) -> None:
        for pod in self._pods_of(job):
            self._kill(pod, reason=reason)
        pods = self._pods_of(job)
        status = job["status"]
        status.update(
            active=0,
            ready=0,
            failed=sum(1 for p in pods if p["status"]["phase"] == "Failed"),
            conditions=[
                self._cond("FailureTarget", reason, message),
                self._cond("Failed", reason, message),
            ],
        )

    def _reap(self) -> None:
        """Foreground deletions complete: the pods are gone, so the Job goes too."""
        for key, job in list(self.jobs.items()):
            if job["metadata"].get("deletionTimestamp"):
                self._remove_job(key)

    def _expire_finished(self) -> None:
        """The TTL-after-finished controller."""
        for key, job in list(self.jobs.items()):
            ttl = job["spec"].get("ttlSecondsAfterFinished")
            ended = _ended(job)
            if ttl is not None and ended and ended + timedelta(seconds=ttl) <= self.now:
                self._remove_job(key)


def _success(name: str, kind: str, group: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": kind},
    }


def _owner_uid(obj: dict[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return refs[0].get("uid") if refs else None


def _index(pod: dict[str, Any]) -> int:
    return int((pod["metadata"].get("annotations") or {}).get(INDEX_KEY, 0))


def _finished(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in job["status"].get("conditions") or []
    )


def _ended(job: dict[str, Any]) -> datetime | None:
    for c in job["status"].get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00"))
    return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _handler(server: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
                status, payload = server.handle(
                    method,
                    parts.path,
                    parse_qs(parts.query),
                    body,
                    self.headers.get("Authorization"),
                )
            except ApiError as exc:
                status, payload = exc.code, exc.status()
            except json.JSONDecodeError:
                status, payload = 400, ApiError(400, "BadRequest", "invalid JSON").status()
            if isinstance(payload, bytes):
                data, content_type = payload, "text/plain"
            else:
                data, content_type = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        # BaseHTTPRequestHandler sets its own Date header; ours (the fake clock) wins.
        def date_time_string(self, timestamp: float | None = None) -> str:
            return email.utils.format_datetime(server.now, usegmt=True)

    return Handler
