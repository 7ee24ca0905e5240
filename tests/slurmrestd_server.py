"""A local slurmrestd for tests of API version negotiation: it answers like a slurmrestd that
serves a chosen set of OpenAPI versions, with the request and record shapes of each (as the
real 22.05 and 24.11 daemons answer them; see deploy/slurm/README.md).

Served, for each version V it serves (`versions`, changeable at run time with `serve()` to
play an upgrade):
    GET  /openapi/v3                 {"openapi": ..., "paths": {...}}: every path below
    GET  /slurm/V/ping               the version's ping shape
    GET  /slurm/V/jobs               the submitted jobs, as slurmctld records of version V
    POST /slurm/V/job/submit         checks the body has version V's shape (400 with Slurm's
                                     parser errors otherwise), records it, answers a job id
    DELETE /slurm/V/job/{id}         cancels
    GET  /slurmdb/V/jobs             [] ("Nothing found", errno 9003 like the real one)
Anything else is 404 with slurmrestd's plain-text "Unable find requested URL.". A request
without X-SLURM-USER-NAME and X-SLURM-USER-TOKEN is 401. `calls` records "METHOD /path".
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

V38 = "v0.0.38"
WRAPPED = {"v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43"}
# The body fields of a job description each version accepts (a subset: those the portal sends).
COMMON_FIELDS = {
    "name",
    "comment",
    "tasks",
    "cpus_per_task",
    "memory_per_node",
    "time_limit",
    "current_working_directory",
    "standard_input",
    "standard_output",
    "standard_error",
    "environment",
    "partition",
    "account",
    "array",
}


def _number(value: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": value}


class FakeSlurmrestd:
    def __init__(self, versions: Iterable[str] = (V38,), *, release: str = "22.05.8") -> None:
        self.versions: tuple[str, ...] = tuple(versions)
        self.release = release
        self.calls: list[str] = []
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeSlurmrestd:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                fake._handle(self)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def serve(self, versions: Iterable[str]) -> None:
        """From now on serve these versions (an upgrade, as far as clients can tell)."""
        self.versions = tuple(versions)

    # --- answers ---------------------------------------------------------------------------

    def paths(self) -> dict[str, Any]:
        out: dict[str, Any] = {"/openapi/v3": {}}
        for version in self.versions:
            for path in ("/ping", "/jobs", "/job/submit", "/job/{job_id}", "/diag"):
                out[f"/slurm/{version}{path}"] = {}
            for path in ("/jobs", "/job/{job_id}", "/accounts", "/associations"):
                out[f"/slurmdb/{version}{path}"] = {}
        return out

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        with self._lock:
            self.calls.append(f"{request.command} {path}")
        if not request.headers.get("X-SLURM-USER-NAME") or not request.headers.get(
            "X-SLURM-USER-TOKEN"
        ):
            self._send(request, 401, "Authentication failure")
            return
        if request.command == "GET" and path == "/openapi/v3":
            self._send(request, 200, {"openapi": "3.0.2", "paths": self.paths()})
            return
        match = re.match(r"^/(slurm|slurmdb)/(v\d+\.\d+\.\d+)(/.*)$", path)
        if not match or match[2] not in self.versions:
            self._send(request, 404, "Unable find requested URL. Please view /openapi/v3.")
            return
        api, version, rest = match[1], match[2], match[3]
        body = json.loads(raw) if raw else None
        status, answer = self._route(request.command, api, version, rest, body)
        if status == 404:
            self._send(request, 404, "Unable find requested URL. Please view /openapi/v3.")
            return
        answer.setdefault("errors", [])
        answer["meta"] = {"Slurm": {"release": self.release}}
        self._send(request, status, answer)

    def _route(
        self, method: str, api: str, version: str, rest: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if api == "slurmdb":
            if method == "GET" and rest == "/jobs":
                nothing = {"error_number": 9003, "error": "Nothing found with query"}
                return 200, {"jobs": [], "errors": [nothing]}
            return 404, {}
        if method == "GET" and rest == "/ping":
            if version == V38:
                return 200, {"pings": [{"hostname": "vm", "ping": "UP"}]}
            return 200, {"pings": [{"hostname": "vm", "pinged": "UP", "responding": True}]}
        if method == "GET" and rest == "/jobs":
            return 200, {"jobs": [self._record(version, n, b) for n, (_, b) in self._jobs()]}
        if method == "POST" and rest == "/job/submit":
            problems = self._shape_problems(version, body)
            if problems:
                errors = [{"description": p, "source": "parser"} for p in problems]
                errors.append({"error_code": 9001, "error": "Failure during parsing"})
                return 400, {"errors": errors}
            with self._lock:
                self.submitted.append((version, body))
                job_id = len(self.submitted)
            return 200, {"job_id": job_id, "step_id": "batch", "job_submit_user_msg": ""}
        if method == "DELETE" and rest.startswith("/job/"):
            return 200, {}
        return 404, {}

    def _jobs(self) -> list[tuple[int, tuple[str, dict[str, Any]]]]:
        with self._lock:
            return list(enumerate(self.submitted, start=1))

    @staticmethod
    def _shape_problems(version: str, body: Any) -> list[str]:
        """What the version's parser would refuse in a submit body."""
        if not isinstance(body, dict) or not isinstance(body.get("job"), dict):
            return ["a job object is required"]
        job = body["job"]
        problems = []
        script = job.get("script") if version != V38 else body.get("script")
        if not isinstance(script, str) or not script.startswith("#!"):
            problems.append(f"{version}: the batch script is missing")
        allowed = COMMON_FIELDS | ({"gres"} if version == V38 else {"tres_per_node", "script"})
        problems += [f'Unknown key "{k}"' for k in sorted(set(job) - allowed)]
        env = job.get("environment")
        if version == V38 and not isinstance(env, dict):
            problems.append("environment must be an object")
        if version != V38 and not (
            isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env)
        ):
            problems.append("environment must be a list of NAME=value strings")
        for key in ("time_limit", "memory_per_node"):
            value = job.get(key)
            if version == V38 and not isinstance(value, int):
                problems.append(f"{key} must be an integer")
            if version in WRAPPED and not (isinstance(value, dict) and value.get("set") is True):
                problems.append(f"{key} must be a {{set, number}} object")
        return problems

    @staticmethod
    def _record(version: str, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """A PENDING slurmctld record of a submitted job, shaped like version's."""
        comment = body["job"].get("comment", "")
        if version == V38:
            return {
                "job_id": job_id,
                "array_job_id": 0,
                "array_task_id": None,
                "job_state": "PENDING",
                "state_reason": "Priority",
                "comment": comment,
                "start_time": 0,
                "end_time": 0,
                "exit_code": 0,
                "tres_alloc_str": "",
            }
        unset = {"set": False, "infinite": False, "number": 0}
        return {
            "job_id": job_id,
            "array_job_id": _number(0),
            "array_task_id": unset,
            "job_state": ["PENDING"],
            "state_reason": "Priority",
            "comment": comment,
            "start_time": _number(0),
            "end_time": _number(0),
            "exit_code": {"status": ["PENDING"], "return_code": unset, "signal": {"id": unset}},
            "tres_alloc_str": "",
        }

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        if isinstance(body, str):
            data, kind = body.encode(), "text/plain"
        else:
            data, kind = json.dumps(body).encode(), "application/json"
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
