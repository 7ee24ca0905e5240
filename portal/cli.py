"""`gpuc`: the command-line client of the GPU Commons REST API (/api/v1/, bearer token).

A thin client: it parses flags, calls the API with `requests` and prints the answers; every
rule is enforced by the server. Exit codes: 0 success, 1 error (API, network, configuration),
2 usage error, 4 insufficient quota; `gpuc submit --wait` exits with the job's exit code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import requests

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_QUOTA = 0, 1, 2, 4
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail", "rejected"})
DEFAULT_INTERVAL = 2.0
TIMEOUT = (10, 60)  # seconds: connect, read


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


# --- flag parsing ----------------------------------------------------------------------

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([kmgt](?:i?b)?)?$", re.IGNORECASE)
_MB_PER_UNIT = {"": Decimal(1), "k": Decimal(1) / 1024, "m": Decimal(1), "g": Decimal(1024)}
_MB_PER_UNIT["t"] = Decimal(1024 * 1024)
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?$", re.IGNORECASE)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARRAY_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def parse_memory(text: str) -> int:
    """Megabytes from Slurm-style sizes: '8G', '8000M', '512K', '1.5T', '8GB' or a bare MB count."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise ValueError(f"invalid memory '{text}': use MB (8000) or a size like 8G, 8000M")
    unit = (match[2] or "")[:1].lower()
    megabytes = math.ceil(Decimal(match[1]) * _MB_PER_UNIT[unit])
    if megabytes < 1:
        raise ValueError(f"invalid memory '{text}': must be at least 1 MB")
    return megabytes


def parse_time(text: str) -> int:
    """Whole minutes (seconds round up) from Slurm's --time formats or a duration like '2h'.

    Slurm: 'M', 'M:S', 'H:M:S', 'D-H', 'D-H:M', 'D-H:M:S'. Durations: '2h', '90m', '1h30m', '1d'.
    """
    value = text.strip()
    if match := _SLURM_TIME.match(value):
        days, first, second, third = (int(g) if g else None for g in match.groups())
        if days is not None:  # D-H[:M[:S]]
            hours, minutes, seconds = first or 0, second or 0, third or 0
        elif third is not None:  # H:M:S
            hours, minutes, seconds = first or 0, second or 0, third
        else:  # M or M:S
            hours, minutes, seconds = 0, first or 0, second or 0
        if (second is not None and second >= 60) or (third is not None and third >= 60):
            raise ValueError(f"invalid time '{text}': minutes and seconds must be below 60")
        total = (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    elif (match := _DURATION.match(value)) and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    else:
        raise ValueError(f"invalid time '{text}': use minutes (90), H:M:S (1:30:00) or 2h, 90m, 1d")
    if total <= 0:
        raise ValueError(f"invalid time '{text}': must be longer than zero")
    return math.ceil(total / 60)


def parse_env(text: str) -> tuple[str, str]:
    """One `--env` item: 'KEY=VALUE', or 'KEY' alone to pass this shell's value of KEY."""
    key, sep, value = text.partition("=")
    if not _ENV_KEY.match(key):
        raise ValueError(f"invalid environment variable name '{key}' in '{text}'")
    if not sep:
        if key not in os.environ:
            raise ValueError(f"--env {key}: not set in this shell (use {key}=VALUE)")
        value = os.environ[key]
    return key, value


def parse_array(text: str) -> str:
    """Validate a Slurm array spec ('0-9', '0-9%2', '1,3,5', '0-15:4') and return it unchanged."""
    spec, sep, limit = text.strip().partition("%")
    if sep and not (limit.isdigit() and int(limit) >= 1):
        raise ValueError(f"invalid array '{text}': the %limit must be a positive integer")
    for item in spec.split(","):
        match = _ARRAY_ITEM.match(item)
        if not match:
            raise ValueError(
                f"invalid array '{text}': use indices like 0-9, 1,3,5, 0-15:4 or 0-9%2"
            )
        start, end, step = match[1], match[2], match[3]
        if end is not None and int(end) < int(start):
            raise ValueError(f"invalid array '{text}': range {item} ends before it starts")
        if step is not None and int(step) < 1:
            raise ValueError(f"invalid array '{text}': the step must be at least 1")
    return text.strip()


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Turn a parser's ValueError into an argparse usage error (exit code 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def _job_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid job id '{text}': expected a UUID") from None


def _positive_int(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer >= {minimum}")
        return int(text)

    convert.__name__ = "integer"
    return convert


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    url: str
    token: str


def config_path() -> Path:
    """$GPUC_CONFIG, else ~/.config/gpuc/config.json."""
    explicit = os.environ.get("GPUC_CONFIG")
    return Path(explicit) if explicit else Path.home() / ".config" / "gpuc" / "config.json"


def _read_config_file(path: Path) -> dict[str, Any]:
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
    stored = _read_config_file(config_path())
    url = os.environ.get("GPUC_URL") or stored.get("url") or ""
    token = os.environ.get("GPUC_TOKEN") or stored.get("token") or ""
    if not url or not token:
        raise CliError("not logged in: run 'gpuc login' (or set GPUC_URL and GPUC_TOKEN)")
    return Config(url=url, token=token)


def save_config(path: Path, *, url: str, token: str) -> None:
    """Write url+token atomically, readable by the owner only (0600, directory 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = _read_config_file(path)
    data.update(url=url, token=token)
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
    ) -> requests.Response:
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
        except requests.Timeout:
            raise CliError(f"{self.root} did not answer in time") from None
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.root}: {_reason(exc)}") from None
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return _json(self.request("POST", path, body=body, headers=headers))

    def paginate(
        self, path: str, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Items of a cursor-paginated (or plain list) endpoint, following `next` up to limit.

        Only the cursor's query string is taken from `next`, so the token never goes to another
        host and a proxy that rewrites scheme or host does not matter.
        """
        params = dict(params or {})
        count = 0
        while True:
            page = self.get(path, params)
            items = page.get("results", []) if isinstance(page, dict) else page
            for item in items:
                if limit is not None and count >= limit:
                    return
                yield item
                count += 1
            following = page.get("next") if isinstance(page, dict) else None
            if not following or (limit is not None and count >= limit):
                return
            params = dict(parse_qsl(urlsplit(following).query, keep_blank_values=True))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpu-commons")
    except PackageNotFoundError:
        return "dev"


def _reason(exc: requests.RequestException) -> str:
    text = str(exc.args[0]) if exc.args else exc.__class__.__name__
    if match := re.search(r"\] ([^'\")]+)", text):  # urllib3's "[Errno 111] Connection refused"
        return match[1].strip()
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
    return ApiError(response.status_code, detail, code, body)


# --- output ----------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _id(obj: dict[str, Any]) -> str:
    return str(obj.get("id") or obj.get("uuid") or "")


def _name(value: Any) -> str:
    """A related object as the API may render it: a nested object, a name or an id."""
    if isinstance(value, dict):
        return str(value.get("slug") or value.get("name") or _id(value))
    return "" if value is None else str(value)


def _when(value: Any) -> str:
    """ISO timestamps shortened to 'YYYY-MM-DD HH:MM:SS' (UTC as the server sent it)."""
    return str(value or "").replace("T", " ")[:19]


def _mem(mb: Any) -> str:
    if not isinstance(mb, int):
        return str(mb or "")
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


# --- commands --------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    path = config_path()
    stored = _read_config_file(path)
    url = args.url or os.environ.get("GPUC_URL") or stored.get("url")
    if not url:
        raise CliError("give the portal address with --url (e.g. https://gpu.example.org)", 2)
    token = args.token or os.environ.get("GPUC_TOKEN")
    if not token:
        token = getpass.getpass("API token (create one under 'API tokens' in the portal): ")
    token = token.strip()
    if not token:
        raise CliError("no token given", EXIT_USAGE)
    client = Client(url, token)
    me = client.get("me/")
    save_config(path, url=client.root, token=token)
    user = (me.get("username") or me.get("email")) if isinstance(me, dict) else None
    print(f"Logged in to {client.root} as {user or '?'} (configuration saved in {path})")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace, client: Client) -> int:
    me = client.get("me/")
    if args.json:
        _print_json(me)
        return EXIT_OK
    print(f"{me.get('username', '')} <{me.get('email', '')}> on {client.root}")
    for project in me.get("projects", []):
        print(f"  project {_project_label(project)}  {_id(project)}")
    return EXIT_OK


def _project_label(project: dict[str, Any]) -> str:
    org = project.get("organization")
    org_slug = org.get("slug") if isinstance(org, dict) else project.get("organization_slug")
    slug = project.get("slug") or project.get("name") or _id(project)
    return f"{org_slug}/{slug}" if org_slug else str(slug)


def resolve_project(client: Client, ref: str) -> str:
    """A project uuid from a uuid, a slug or 'organization-slug/project-slug'."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    org_slug, _, slug = ref.rpartition("/")
    matches = [
        p
        for p in client.paginate("projects/")
        if p.get("slug") == slug
        and (not org_slug or _project_label(p).rpartition("/")[0] == org_slug)
    ]
    if not matches:
        raise CliError(f"no project '{ref}' among your projects (see 'gpuc whoami')")
    if len(matches) > 1:
        choices = ", ".join(_project_label(p) for p in matches)
        raise CliError(f"project '{ref}' is ambiguous: say which one of {choices}")
    return _id(matches[0])


def _job_body(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """The submit/estimate body: only what the user gave, the server fills in its defaults."""
    try:
        if args.script == "-":
            script, default_name = sys.stdin.read(), "stdin"
        else:
            script, default_name = Path(args.script).read_text(), Path(args.script).name
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the script {args.script}: {exc}", EXIT_USAGE) from None
    body: dict[str, Any] = {
        "project": resolve_project(client, args.project),
        "cluster": args.cluster,
        "name": args.name or _job_name(default_name),
        "script": script,
    }
    optional = {
        "partition": args.partition,
        "gpus": args.gpus,
        "gpu_type": args.gpu_type,
        "cpus": args.cpus,
        "memory_mb": args.mem,
        "time_limit_minutes": args.time,
        "array": args.array,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if args.env:
        body["env"] = dict(args.env)
    return body


def _job_name(file_name: str) -> str:
    """A job name the API accepts (letters, digits, '.', '_', '-') from a script's file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", file_name).lstrip("._-")[:128]
    return name or "job"


def cmd_estimate(args: argparse.Namespace, client: Client) -> int:
    answer = client.post("jobs/estimate/", _job_body(args, client))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    rows = [
        (
            line.get("resource", ""),
            line.get("quantity", ""),
            line.get("rate", ""),
            line.get("cost", ""),
        )
        for line in answer.get("breakdown", [])
    ]
    if rows:
        _print_table(("RESOURCE", "QUANTITY", "SU/UNIT", "SU"), rows)
    print(f"Estimated cost: {answer.get('estimated_cost')} SU (held at submit, the most it costs)")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    body = _job_body(args, client)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    job = client.post("jobs/", body, headers=headers)
    if args.json and not args.wait:
        _print_json(job)
        return EXIT_OK
    print(_id(job))
    if not args.wait:
        return EXIT_OK
    job = wait_for(client, _id(job), interval=args.interval)
    if args.json:
        _print_json(job)
    return job_exit_code(job)


def wait_for(client: Client, job_id: str, *, interval: float) -> dict[str, Any]:
    """Poll a job until it is final, telling each state change on stderr."""
    seen = None
    while True:
        job = client.get(f"jobs/{job_id}/")
        if job.get("state") != seen:
            seen = job.get("state")
            reason = f" ({job['state_reason']})" if job.get("state_reason") else ""
            print(f"{job_id}: {seen}{reason}", file=sys.stderr)
        if seen in FINAL_STATES:
            return job
        time.sleep(interval)


def job_exit_code(job: dict[str, Any]) -> int:
    """The job's own exit code (0-255); else 0 if it completed and 1 if it did not."""
    code = job.get("exit_code")
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else 1
    return EXIT_OK if job.get("state") == "completed" else EXIT_ERROR


def cmd_ls(args: argparse.Namespace, client: Client) -> int:
    params = {
        "project": resolve_project(client, args.project) if args.project else None,
        "state": args.state,
        "page_size": min(args.limit, 200),
    }
    jobs = list(client.paginate("jobs/", params, limit=args.limit))
    if args.json:
        _print_json(jobs)
        return EXIT_OK
    rows = [
        (
            _id(j),
            j.get("name", ""),
            j.get("state", ""),
            _name(j.get("project")),
            _name(j.get("cluster")),
            j.get("gpus", ""),
            _when(j.get("created_at")),
            j.get("charged_cost") or j.get("estimated_cost") or "",
        )
        for j in jobs
    ]
    _print_table(("ID", "NAME", "STATE", "PROJECT", "CLUSTER", "GPUS", "CREATED", "SU"), rows)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    job = client.get(f"jobs/{args.job_id}/")
    if args.json:
        _print_json(job)
        return EXIT_OK
    gpus = f"{job.get('gpus', 0)}" + (f" x {job['gpu_type']}" if job.get("gpu_type") else "")
    fields = [
        ("Job", f"{job.get('name', '')} ({_id(job)})"),
        (
            "State",
            job.get("state", "") + (f": {job['state_reason']}" if job.get("state_reason") else ""),
        ),
        ("Project", _name(job.get("project"))),
        ("Cluster", _name(job.get("cluster"))),
        ("GPUs", gpus),
        ("CPUs", job.get("cpus")),
        ("Memory", _mem(job.get("memory_mb"))),
        (
            "Time limit",
            f"{job.get('time_limit_minutes')} min" if job.get("time_limit_minutes") else None,
        ),
        ("Array", job.get("array")),
        ("Backend id", job.get("backend_id")),
        ("Created", _when(job.get("created_at"))),
        ("Started", _when(job.get("started_at"))),
        ("Ended", _when(job.get("ended_at"))),
        (
            "Elapsed",
            f"{job['elapsed_seconds']} s" if job.get("elapsed_seconds") is not None else None,
        ),
        ("Exit code", job.get("exit_code")),
        ("Estimated", f"{job['estimated_cost']} SU" if job.get("estimated_cost") else None),
        ("Charged", f"{job['charged_cost']} SU" if job.get("charged_cost") is not None else None),
    ]
    for label, value in fields:
        if value not in (None, ""):
            print(f"{label + ':':<12}{value}")
    usage = job.get("usage") or {}
    if usage:
        print("Usage:      " + ", ".join(f"{k}={v}" for k, v in sorted(usage.items())))
    events = job.get("events") or job.get("timeline") or []
    if events:
        print("Timeline:")
        for event in events:
            change = f"{event.get('from_state') or '-'} -> {event.get('to_state') or '-'}"
            message = f"  {event['message']}" if event.get("message") else ""
            print(f"  {_when(event.get('created_at') or event.get('at'))}  {change}{message}")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, client: Client) -> int:
    offset = 0
    while True:
        offset = _print_log(client, args.job_id, args.stream, offset)
        if not args.follow:
            return EXIT_OK
        if client.get(f"jobs/{args.job_id}/").get("state") in FINAL_STATES:
            # The job may have written its last lines between our read and its end: drain.
            _print_log(client, args.job_id, args.stream, offset)
            return EXIT_OK
        time.sleep(args.interval)


def _print_log(client: Client, job_id: str, stream: str, offset: int) -> int:
    """Print the log from `offset` to its current end; returns the next offset."""
    while True:
        chunk = client.get(f"jobs/{job_id}/log/", {"stream": stream, "offset": offset})
        data = chunk.get("data") or ""
        if data:
            sys.stdout.write(data)
            sys.stdout.flush()
        offset = int(chunk.get("next_offset", offset))
        if chunk.get("eof") or not data:
            return offset


def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.post(f"jobs/{args.job_id}/cancel/")
    state = job.get("state") if isinstance(job, dict) else None
    print(f"{args.job_id}: {state or 'cancel requested'}")
    return EXIT_OK


def cmd_results(args: argparse.Namespace, client: Client) -> int:
    words = args.words
    if words[0] == "get":
        if len(words) != 3:
            raise CliError("usage: gpuc results get JOB_ID PATH [-o FILE]", EXIT_USAGE)
        return _results_get(client, _checked_job_id(words[1]), words[2], args.output)
    if len(words) != 1 or args.output:
        raise CliError("usage: gpuc results JOB_ID  |  gpuc results get JOB_ID PATH", EXIT_USAGE)
    items = list(client.paginate(f"jobs/{_checked_job_id(words[0])}/results/"))
    if args.json:
        _print_json(items)
        return EXIT_OK
    rows = [(i.get("path", ""), i.get("size", ""), _when(i.get("modified_at"))) for i in items]
    _print_table(("PATH", "BYTES", "MODIFIED"), rows)
    return EXIT_OK


def _checked_job_id(text: str) -> str:
    try:
        return _job_id(text)
    except argparse.ArgumentTypeError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _results_get(client: Client, job_id: str, path: str, output: str | None) -> int:
    """Stream one result file to -o FILE (default: its base name here; '-' for stdout)."""
    response = client.request(
        "GET", f"jobs/{job_id}/results/{quote(path.lstrip('/'))}", stream=True
    )
    with response:
        if output == "-":
            for block in response.iter_content(64 * 1024):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
            return EXIT_OK
        target = Path(output or Path(path).name or "result")
        fd, tmp = tempfile.mkstemp(dir=target.parent.absolute(), prefix=f".{target.name}.")
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for block in response.iter_content(64 * 1024):
                    handle.write(block)
                    size += len(block)
            os.chmod(tmp, 0o644 & ~_umask())
            os.replace(tmp, target)
        except requests.RequestException as exc:
            Path(tmp).unlink(missing_ok=True)
            raise CliError(f"download of {path} broke off: {_reason(exc)}") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    print(f"{target} ({size} bytes)", file=sys.stderr)
    return EXIT_OK


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def cmd_balance(args: argparse.Namespace, client: Client) -> int:
    params = {"project": resolve_project(client, args.project) if args.project else None}
    allocations = list(client.paginate("allocations/", params))
    if args.json:
        _print_json(allocations)
        return EXIT_OK
    columns = ("credited", "held", "charged", "available")
    rows = [
        (
            _id(a),
            _name(a.get("project")),
            a.get("kind", ""),
            a.get("status", ""),
            _when(a.get("ends_at"))[:10],
            *(a.get(c, "") for c in columns),
        )
        for a in allocations
    ]
    if len(allocations) > 1:
        totals = [
            sum((Decimal(str(a.get(c) or 0)) for a in allocations), Decimal(0)) for c in columns
        ]
        rows.append(("total", "", "", "", "", *totals))
    _print_table(
        (
            "ALLOCATION",
            "PROJECT",
            "KIND",
            "STATUS",
            "ENDS",
            "CREDITED",
            "HELD",
            "CHARGED",
            "AVAILABLE",
        ),
        rows,
    )
    return EXIT_OK


# --- the parser ------------------------------------------------------------------------


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", metavar="SCRIPT_FILE", help="batch script ('-' reads stdin)")
    parser.add_argument("--project", "-p", required=True, help="project uuid, slug or org/slug")
    parser.add_argument("--cluster", "-c", required=True, help="cluster name")
    parser.add_argument("--name", "-J", help="job name (default: the script's file name)")
    parser.add_argument("--partition", help="partition (default: the cluster's default)")
    parser.add_argument("--gpus", "-G", type=_positive_int(0), help="GPUs per task")
    parser.add_argument("--gpu-type", help="GPU type, e.g. h100 (see the cluster's types)")
    parser.add_argument("--cpus", type=_positive_int(1), help="CPUs per task")
    parser.add_argument(
        "--mem", type=_argtype(parse_memory), help="memory: MB, or 8G / 8000M / 512K"
    )
    parser.add_argument(
        "--time", "-t", type=_argtype(parse_time), help="time limit: 90, 1:30:00, 2-00, 2h, 90m"
    )
    parser.add_argument("--array", "-a", type=_argtype(parse_array), help="e.g. 0-9%%2, 1,3,5")
    parser.add_argument(
        "--env",
        "-e",
        action="append",
        type=_argtype(parse_env),
        metavar="KEY=VALUE",
        help="environment variable (repeatable; KEY alone passes this shell's value)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuc",
        description="Command-line client of GPU Commons: submit and follow jobs, see balances.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage error, 4 insufficient quota; "
        "'submit --wait' exits with the job's exit code. "
        "Configuration: $GPUC_CONFIG or ~/.config/gpuc/config.json; GPUC_URL and GPUC_TOKEN "
        "override it.",
    )
    parser.add_argument("--version", action="version", version=f"gpuc {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("login", help="store the portal URL and an API token (verified)")
    p.add_argument("--url", help="portal address, e.g. https://gpu.example.org")
    p.add_argument("--token", help="API token (prompted for when omitted)")

    p = sub.add_parser("whoami", help="who the stored token belongs to, and their projects")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("submit", help="submit a batch script; prints the job id")
    _add_job_flags(p)
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument("--wait", "-w", action="store_true", help="wait for the end; exit as the job")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help=argparse.SUPPRESS)

    p = sub.add_parser("estimate", help="what a job would cost (the amount held at submit)")
    _add_job_flags(p)

    p = sub.add_parser("ls", help="your jobs, newest first")
    p.add_argument("--project", "-p", help="project uuid, slug or org/slug")
    p.add_argument("--state", "-s", help="pending, queued, running, completed, failed, ...")
    p.add_argument("--limit", "-n", type=_positive_int(1), default=50, help="at most N jobs")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="one job: state, timeline, resources, costs")
    p.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", help="print a job's output (-f to follow it to the end)")
    p.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    p.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help=argparse.SUPPRESS)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id", metavar="JOB_ID", type=_job_id)

    p = sub.add_parser(
        "results",
        help="list a job's output files, or download one",
        usage="gpuc results JOB_ID [--json]\n       gpuc results get JOB_ID PATH [-o FILE]",
    )
    p.add_argument("words", nargs="+", metavar="JOB_ID | get JOB_ID PATH")
    p.add_argument("--output", "-o", help="where to save (default: the file's name; '-' stdout)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("balance", help="allocations: credited, held, charged, available SU")
    p.add_argument("--project", "-p", help="project uuid, slug or org/slug")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "whoami": cmd_whoami,
    "submit": cmd_submit,
    "estimate": cmd_estimate,
    "ls": cmd_ls,
    "status": cmd_status,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "results": cmd_results,
    "balance": cmd_balance,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "login":
            return cmd_login(args)
        config = load_config()
        return COMMANDS[args.command](args, Client(config.url, config.token))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gpuc logs ID | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
