"""The `gpuc` commands: each takes the parsed arguments, calls the API through Client and
prints the answer (a table, or JSON with --json)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from portal.cli.client import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    ApiError,
    Client,
    CliError,
    config_path,
    failure_reason,
    load_config,
    read_config_file,
    save_config,
)
from portal.cli.parsing import is_full_job_id, parse_job_id, script_directives

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail", "rejected"})
DEFAULT_INTERVAL = 2.0
SHORT_ID_LENGTH = 8  # as the portal's pages show a job id
AMBIGUOUS_SHOWN = 10  # candidates listed when a short id names several jobs


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
    stored = read_config_file(path)
    url = args.url or os.environ.get("GPUC_URL") or stored.get("url")
    if not url:
        raise CliError(
            "give the portal address with --url (e.g. https://gpu.example.org)", EXIT_USAGE
        )
    token = args.token or os.environ.get("GPUC_TOKEN")
    if not token:
        token = getpass.getpass("API token (create one under 'API tokens' in the portal): ")
    token = token.strip()
    if not token:
        raise CliError("no token given", EXIT_USAGE)
    client = Client(url, token)
    me = client.get("me/")
    me = me if isinstance(me, dict) else {}
    # Defaults stored for another portal mean nothing here.
    kept = stored if _root(stored.get("url")) == client.root else {}
    project = _login_project(client, me, args.project, kept.get("project"))
    cluster = _login_cluster(client, args.cluster, kept.get("cluster"))
    save_config(path, url=client.root, token=token, project=project, cluster=cluster)
    user = me.get("username") or me.get("email")
    print(f"Logged in to {client.root} as {user or '?'} (configuration saved in {path})")
    _tell_defaults(me, project, cluster)
    return EXIT_OK


def _root(url: Any) -> str:
    return Client(str(url), "").root if url else ""


def _login_project(client: Client, me: dict[str, Any], given: str | None, kept: Any) -> Any:
    """The default project after login: the one given, else the stored one while it is still
    among the user's projects, else the user's only project, else none."""
    if given:
        return resolve_project(client, given)
    projects = me.get("projects")
    if not isinstance(projects, list):  # nothing to check the stored default against
        return kept
    if kept and any(_is_project(p, str(kept)) for p in projects):
        return kept
    return _id(projects[0]) if len(projects) == 1 else None


def _is_project(project: dict[str, Any], ref: str) -> bool:
    return ref in (_id(project), project.get("slug"), _project_label(project))


def _login_cluster(client: Client, given: str | None, kept: Any) -> Any:
    """The default cluster after login: the one given (checked), else the stored one while the
    user may still use it, else the only cluster the user may use, else none."""
    if given:
        return check_cluster(client, given)
    try:
        names = [str(c.get("name")) for c in client.paginate("clusters/")]
    except ApiError:  # a default is a convenience: never a reason to refuse the login
        return kept
    if kept and kept in names:
        return kept
    return names[0] if len(names) == 1 else None


def check_cluster(client: Client, name: str) -> str:
    """`name` if it is one of the clusters the user may use; a clear error otherwise."""
    names = [str(c.get("name")) for c in client.paginate("clusters/")]
    if name not in names:
        known = ", ".join(names) or "none"
        raise CliError(f"no cluster '{name}' among the clusters you may use ({known})")
    return name


def _tell_defaults(me: dict[str, Any], project: Any, cluster: Any) -> None:
    listed = me.get("projects")
    projects: list[Any] = listed if isinstance(listed, list) else []
    if project:
        match = [p for p in projects if _is_project(p, str(project))]
        print(f"Default project: {_project_label(match[0]) if match else project}")
    elif projects:
        print(
            f"You have {len(projects)} projects: choose a default with "
            "'gpuc config set project ORG/PROJECT' (or give --project each time)"
        )
    if cluster:
        print(f"Default cluster: {cluster}")


def cmd_config(args: argparse.Namespace) -> int:
    """`gpuc config`: show the stored settings; `set KEY VALUE` / `unset KEY` for the default
    project and cluster (checked against the portal before they are stored)."""
    path = config_path()
    if args.action in (None, "show"):
        if args.key or args.value:
            raise CliError("usage: gpuc config [show]", EXIT_USAGE)
        stored = read_config_file(path)
        print(f"# {path}")
        for key in ("url", "token", "project", "cluster"):
            value = stored.get(key)
            if key == "token" and value:
                value = f"{str(value)[:10]}… (hidden)"
            override = os.environ.get(f"GPUC_{key.upper()}")
            note = f"  (overridden by $GPUC_{key.upper()})" if override else ""
            print(f"{key:<8} {value if value else '-'}{note}")
        return EXIT_OK
    if args.key not in ("project", "cluster"):
        raise CliError("the keys are 'project' and 'cluster'", EXIT_USAGE)
    if args.action == "unset":
        if args.value:
            raise CliError(f"usage: gpuc config unset {args.key}", EXIT_USAGE)
        save_config(path, **{args.key: None})
        print(f"No default {args.key}")
        return EXIT_OK
    if not args.value:
        raise CliError(f"usage: gpuc config set {args.key} VALUE", EXIT_USAGE)
    config = load_config()
    client = Client(config.url, config.token)
    if args.key == "project":
        value = resolve_project(client, args.value)
    else:
        value = check_cluster(client, args.value)
    save_config(path, **{args.key: value})
    print(f"Default {args.key}: {args.value}" + (f" ({value})" if value != args.value else ""))
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace, client: Client) -> int:
    me = client.get("me/")
    if args.json:
        _print_json(me)
        return EXIT_OK
    print(f"{me.get('username', '')} <{me.get('email', '')}> on {client.root}")
    default = _default("project")
    for project in me.get("projects", []):
        mark = "  (default)" if default and _is_project(project, default) else ""
        print(f"  project {_project_label(project)}  {_id(project)}{mark}")
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
    """The submit/estimate body: flags, else the script's #SBATCH lines; the server fills in
    defaults for what neither gives (except the time limit, which bounds the cost)."""
    try:
        if args.script == "-":
            script, default_name = sys.stdin.read(), "stdin"
        else:
            script, default_name = Path(args.script).read_text(), Path(args.script).name
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the script {args.script}: {exc}", EXIT_USAGE) from None
    try:
        directives, ignored = script_directives(script)
    except ValueError as exc:
        raise CliError(f"{args.script}: {exc}", EXIT_USAGE) from None
    for option in ignored:
        print(f"warning: {args.script}: ignoring '#SBATCH {option}'", file=sys.stderr)
    given = {
        "name": args.name,
        "partition": args.partition,
        "gpus": args.gpus,
        "gpu_type": args.gpu_type,
        "cpus": args.cpus,
        "memory_mb": args.mem,
        "time_limit_minutes": args.time,
        "array": args.array,
    }
    values = {**directives, **{k: v for k, v in given.items() if v is not None}}
    if "time_limit_minutes" not in values:
        raise CliError(
            "give a time limit with --time (or '#SBATCH --time' in the script)", EXIT_USAGE
        )
    project, cluster = _project_and_cluster(args)
    body: dict[str, Any] = {
        "project": resolve_project(client, project),
        "cluster": cluster,
        "name": _job_name(default_name),
        "script": script,
        **values,
    }
    if args.env:
        body["env"] = dict(args.env)
    return body


def _default(key: str) -> str | None:
    """A default for --project/--cluster: $GPUC_PROJECT/$GPUC_CLUSTER, else the config file."""
    value = os.environ.get(f"GPUC_{key.upper()}") or read_config_file(config_path()).get(key)
    return str(value) if value else None


def _project_and_cluster(args: argparse.Namespace) -> tuple[str, str]:
    """--project and --cluster, else their defaults; a usage error naming what is missing."""
    project = args.project or _default("project")
    cluster = args.cluster or _default("cluster")
    if not project or not cluster:
        key = "project" if not project else "cluster"
        raise CliError(
            f"give --{key} (or set a default: 'gpuc config set {key} …', or GPUC_{key.upper()})",
            EXIT_USAGE,
        )
    return project, cluster


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
    # A key of our own makes the POST safe to repeat when the answer is lost on the way back.
    key = args.idempotency_key or f"gpuc-{uuid.uuid4()}"
    job = client.post("jobs/", body, headers={"Idempotency-Key": key}, retries=3)
    if not args.wait:
        if args.json:
            _print_json(job)
        else:
            print(_id(job))
        return EXIT_OK
    # Waiting: stdout carries the job's own output (or, with --json, the final job), so
    # `gpuc submit --wait job.sh > out.txt` keeps what the job printed; the id and the state
    # changes go to stderr.
    job = follow_job(
        client,
        _id(job),
        interval=args.interval,
        stream=None if args.json else "stdout",
        announce=True,
    )
    if args.json:
        _print_json(job)
    elif job.get("state") != "completed":
        short = _id(job)[:SHORT_ID_LENGTH]
        print(f"{short}: its error output: gpuc logs {short} --stream stderr", file=sys.stderr)
    return job_exit_code(job)


def follow_job(
    client: Client, job_id: str, *, interval: float, stream: str | None, announce: bool
) -> dict[str, Any]:
    """Poll a job until it is final, printing its `stream` log as it grows (from byte 0,
    through the log API's offsets) and, if `announce`, each state change on stderr."""
    seen = None
    offset = 0
    while True:
        if stream:
            offset = _print_log(client, job_id, stream, offset)
        job = client.get(f"jobs/{job_id}/")
        if announce and job.get("state") != seen:
            seen = job.get("state")
            reason = f" ({job['state_reason']})" if job.get("state_reason") else ""
            code = f" (exit {job['exit_code']})" if job.get("exit_code") not in (None, 0) else ""
            print(f"{job_id}: {seen}{reason}{code}", file=sys.stderr)
        if job.get("state") in FINAL_STATES:
            if stream:  # the job may have written its last lines after our read: drain
                _print_log(client, job_id, stream, offset)
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
        "cluster": args.cluster,
        "origin": getattr(args, "origin", None),
        "page_size": min(args.limit, 200),
    }
    jobs = list(client.paginate("jobs/", params, limit=args.limit))
    if args.json:
        _print_json(jobs)
        return EXIT_OK
    short = short_ids([_id(j) for j in jobs])
    rows = [
        (
            short[_id(j)],
            j.get("name", ""),
            j.get("state", "") + (" (direct)" if j.get("origin") == "direct" else ""),
            j.get("project_name") or _name(j.get("project")),
            _name(j.get("cluster")),
            j.get("gpus", ""),
            _when(j.get("created_at")),
            j.get("charged_cost") or j.get("estimated_cost") or "",
        )
        for j in jobs
    ]
    _print_table(("ID", "NAME", "STATE", "PROJECT", "CLUSTER", "GPUS", "CREATED", "SU"), rows)
    return EXIT_OK


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id cut to the portal's short id (its first 8 characters), longer where two of
    these ids would otherwise look the same."""
    shown: dict[str, str] = {}
    for job_id in ids:
        length = SHORT_ID_LENGTH
        while length < len(job_id) and any(
            other != job_id and other.startswith(job_id[:length]) for other in ids
        ):
            length += 1
        shown[job_id] = job_id[:length].rstrip("-")
    return shown


def resolve_job(client: Client, job_id: str) -> str:
    """The whole id of a job given by its UUID or by the start of one (the short id the
    portal shows), among the caller's jobs; an ambiguous start is an error listing the jobs."""
    if is_full_job_id(job_id):
        return job_id
    page = client.get("jobs/", {"id_prefix": job_id, "page_size": AMBIGUOUS_SHOWN})
    matches = page.get("results", []) if isinstance(page, dict) else page
    if not matches:
        raise CliError(f"No such job: none of your jobs has an id starting with '{job_id}'")
    if len(matches) == 1:
        return _id(matches[0])
    more = " (and more)" if isinstance(page, dict) and page.get("next") else ""
    listing = "\n".join(
        f"  {_id(j)}  {j.get('name', '')}  {j.get('state', '')}  {_when(j.get('created_at'))}"
        for j in matches
    )
    raise CliError(
        f"job id '{job_id}' is ambiguous: {len(matches)} of your jobs{more} start with it; "
        f"give more of the id:\n{listing}"
    )


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    job = client.get(f"jobs/{resolve_job(client, args.job_id)}/")
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
        ("Project", job.get("project_name") or _name(job.get("project"))),
        (
            "Origin",
            "submitted outside the portal (found in the cluster's accounting)"
            if job.get("origin") == "direct"
            else None,
        ),
        ("User", job.get("user") or job.get("cluster_user")),
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
        ("Held", f"{job['held']} SU" if job.get("held") not in (None, "0.0000") else None),
        ("Uncovered", f"{job['uncovered_cost']} SU" if job.get("uncovered_cost") else None),
    ]
    for label, value in fields:
        if value not in (None, ""):
            print(f"{label + ':':<12}{value}")
    usage = {k: v for k, v in (job.get("usage") or {}).items() if v not in (None, "")}
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
    job_id = resolve_job(client, args.job_id)
    if args.follow:
        follow_job(client, job_id, interval=args.interval, stream=args.stream, announce=False)
    else:
        _print_log(client, job_id, args.stream, 0)
    return EXIT_OK


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
    job_id = resolve_job(client, args.job_id)
    job = client.post(f"jobs/{job_id}/cancel/")
    state = job.get("state") if isinstance(job, dict) else None
    if state in FINAL_STATES:
        print(f"{job_id}: {state}")
    else:  # the cluster was asked; the next sync records the end
        print(f"{job_id}: cancel requested (state: {state or 'unknown'})")
    return EXIT_OK


def cmd_results(args: argparse.Namespace, client: Client) -> int:
    words = args.words
    if words[0] == "get":
        if len(words) != 3:
            raise CliError("usage: gpuc results get JOB_ID PATH [-o FILE]", EXIT_USAGE)
        job_id = resolve_job(client, _checked_job_id(words[1]))
        return _results_get(client, job_id, words[2], args.output)
    if len(words) != 1 or args.output:
        raise CliError("usage: gpuc results JOB_ID  |  gpuc results get JOB_ID PATH", EXIT_USAGE)
    job_id = resolve_job(client, _checked_job_id(words[0]))
    items = list(client.paginate(f"jobs/{job_id}/results/"))
    if args.json:
        _print_json(items)
        return EXIT_OK
    rows = [(i.get("path", ""), i.get("size", ""), _when(i.get("modified"))) for i in items]
    _print_table(("PATH", "BYTES", "MODIFIED"), rows)
    return EXIT_OK


def _checked_job_id(text: str) -> str:
    try:
        return parse_job_id(text)
    except ValueError as exc:
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
            raise CliError(f"download of {path} broke off: {failure_reason(exc)}") from None
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
    rows: list[tuple[Any, ...]] = [
        (
            _id(a),
            a.get("project_name") or _name(a.get("project")),
            ",".join(a.get("clusters") or []),
            a.get("kind", ""),
            a.get("status", ""),
            _when(a.get("ends_at"))[:10],
            *(a.get(c, "") for c in columns),
        )
        for a in allocations
    ]
    active = [a for a in allocations if a.get("status") == "active"]
    if len(allocations) > 1 and active:
        totals = [sum((Decimal(str(a.get(c) or 0)) for a in active), Decimal(0)) for c in columns]
        rows.append(("total (active)", "", "", "", "", "", *totals))
    headers = ("ALLOCATION", "PROJECT", "CLUSTERS", "KIND", "STATUS", "ENDS")
    _print_table((*headers, *(c.upper() for c in columns)), rows)
    return EXIT_OK


def cmd_clusters(args: argparse.Namespace, client: Client) -> int:
    clusters = list(client.paginate("clusters/"))
    if args.json:
        _print_json(clusters)
        return EXIT_OK
    for cluster in clusters:
        types = ", ".join(cluster.get("gpu_types") or []) or "-"
        print(f"{cluster.get('name')}  ({cluster.get('kind', '')}; GPU types: {types})")
        given = cluster.get("options")
        options: dict[str, Any] = given if isinstance(given, dict) else {}
        print(f"  limits per job: {_limits(options) or 'none stated (the portal defaults apply)'}")
        partitions = options.get("partitions") or []
        default = options.get("default_partition") or next(iter(partitions), None)
        if isinstance(partitions, dict):  # partitions with limits of their own
            for name, own in partitions.items():
                mark = " (default)" if name == default else ""
                print(f"  partition {name}{mark}: {_limits(own) or 'the limits above'}")
        elif partitions:
            names = [f"{n} (default)" if n == default else str(n) for n in partitions]
            print(f"  partitions: {', '.join(names)}")
        for rate in cluster.get("rates") or []:
            what = rate.get("resource", "") + (
                f":{rate['gpu_type']}" if rate.get("gpu_type") else ""
            )
            print(f"  {what:<24}{rate.get('su_per_unit')} SU")
    return EXIT_OK


# A cluster's (or partition's) max_* options, in the order and words of `gpuc submit`'s flags.
_LIMITS: tuple[tuple[str, str], ...] = (
    ("max_gpus", "GPU"),
    ("max_cpus", "CPU"),
    ("max_memory_mb", "memory"),
    ("max_time_minutes", "time"),
    ("max_array_tasks", "array task"),
)


def _limits(options: Any) -> str:
    """'4 GPUs, 8 CPUs, 16G memory, 1d time' from max_* options; '' when there are none."""
    if not isinstance(options, dict):
        return ""
    parts = []
    for key, label in _LIMITS:
        value = options.get(key)
        if value is None:
            continue
        if key == "max_memory_mb":
            parts.append(f"{_mem(value)} {label}")
        elif key == "max_time_minutes":
            parts.append(f"{_duration(value)} {label}")
        else:
            parts.append(f"{value} {label}{'' if value == 1 else 's'}")
    known = {key for key, _ in _LIMITS}
    parts += [
        f"{k}={v}" for k, v in sorted(options.items()) if k.startswith("max_") and k not in known
    ]
    return ", ".join(parts)


def _duration(minutes: Any) -> str:
    """Minutes as gpuc's --time accepts them: 90 -> '1h30m', 1440 -> '1d'."""
    if not isinstance(minutes, int) or minutes <= 0:
        return str(minutes)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n)


def cmd_access(args: argparse.Namespace, client: Client) -> int:
    """`gpuc access request -c CLUSTER -p PROJECT [--username NAME]` and `gpuc access ls`."""
    if args.action == "request":
        project, cluster = _project_and_cluster(args)
        body: dict[str, Any] = {
            "project": resolve_project(client, project),
            "cluster": cluster,
        }
        if args.username:
            body["username"] = args.username
        created = client.post("cluster-access-requests/", body)
        if args.json:
            _print_json(created)
            return EXIT_OK
        state = created.get("state")
        print(f"{_id(created)}  {created.get('username')}@{created.get('cluster')}  {state}")
        if state == "pending":
            print("Facility staff will review it; you will be told by email.")
        elif state in ("approved", "provisioning"):
            print("Approved: the account is being created ('gpuc access ls' shows when it is).")
        return EXIT_OK
    requests = list(client.paginate("cluster-access-requests/"))
    if args.json:
        _print_json(requests)
        return EXIT_OK
    rows = [
        (
            _id(r)[:8],
            r.get("cluster"),
            r.get("project_name"),
            r.get("username"),
            r.get("state"),
            _when(r.get("created_at")),
            r.get("reason") or "",
        )
        for r in requests
    ]
    _print_table(("ID", "CLUSTER", "PROJECT", "USER", "STATE", "ASKED", "WHY"), rows)
    return EXIT_OK
