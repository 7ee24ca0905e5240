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
    Client,
    CliError,
    config_path,
    failure_reason,
    read_config_file,
    save_config,
)
from portal.cli.parsing import parse_job_id, script_directives
from portal.formatting import format_su, format_su_rate, last_day_iso, rate_name

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail", "rejected"})
DEFAULT_INTERVAL = 2.0


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
    project = args.project or _default("project")
    cluster = args.cluster or _default("cluster")
    if not project or not cluster:
        missing = "--project" if not project else "--cluster"
        raise CliError(
            f"give {missing} (or set GPUC_{missing[2:].upper()}, or '{missing[2:]}' in "
            f"{config_path()})",
            EXIT_USAGE,
        )
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


def _job_name(file_name: str) -> str:
    """A job name the API accepts (letters, digits, '.', '_', '-') from a script's file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", file_name).lstrip("._-")[:128]
    return name or "job"


def _su(value: Any) -> str:
    return f"{format_su(value)} SU"


def cmd_estimate(args: argparse.Namespace, client: Client) -> int:
    answer = client.post("jobs/estimate/", _job_body(args, client))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    rows = [
        (
            rate_name(line.get("resource")),
            line.get("quantity", ""),
            format_su_rate(line.get("rate")),
            format_su(line.get("cost")),
        )
        for line in answer.get("breakdown", [])
    ]
    if rows:
        _print_table(("RESOURCE", "QUANTITY", "SU/UNIT", "SU"), rows)
    cost = format_su(answer.get("estimated_cost"))
    print(f"Estimated cost: {cost} SU (held at submit, the most it costs)")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    body = _job_body(args, client)
    # A key of our own makes the POST safe to repeat when the answer is lost on the way back.
    key = args.idempotency_key or f"gpuc-{uuid.uuid4()}"
    job = client.post("jobs/", body, headers={"Idempotency-Key": key}, retries=3)
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
        "cluster": args.cluster,
        "origin": getattr(args, "origin", None),
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
            j.get("state", "") + (" (direct)" if j.get("origin") == "direct" else ""),
            j.get("project_name") or _name(j.get("project")),
            _name(j.get("cluster")),
            j.get("gpus", ""),
            _when(j.get("created_at")),
            format_su(j.get("charged_cost") or j.get("estimated_cost")),
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
        ("Estimated", _su(job.get("estimated_cost")) if job.get("estimated_cost") else None),
        ("Charged", _su(job.get("charged_cost")) if job.get("charged_cost") is not None else None),
        ("Held", _su(job.get("held")) if job.get("held") not in (None, "0.0000") else None),
        ("Uncovered", _su(job.get("uncovered_cost")) if job.get("uncovered_cost") else None),
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
    if state in FINAL_STATES:
        print(f"{args.job_id}: {state}")
    else:  # the cluster was asked; the next sync records the end
        print(f"{args.job_id}: cancel requested (state: {state or 'unknown'})")
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
            last_day_iso(a.get("ends_at")),
            *(format_su(a.get(c)) for c in columns),
        )
        for a in allocations
    ]
    active = [a for a in allocations if a.get("status") == "active"]
    if len(allocations) > 1 and active:
        totals = [sum((Decimal(str(a.get(c) or 0)) for a in active), Decimal(0)) for c in columns]
        rows.append(("total (active)", "", "", "", "", "", *(format_su(t) for t in totals)))
    headers = ("ALLOCATION", "PROJECT", "CLUSTERS", "KIND", "STATUS", "LAST-DAY")
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
        for rate in cluster.get("rates") or []:
            what = rate_name(
                rate.get("resource", "") + (f":{rate['gpu_type']}" if rate.get("gpu_type") else "")
            )
            print(f"  {what:<24}{format_su_rate(rate.get('su_per_unit'))} SU")
    return EXIT_OK


def cmd_access(args: argparse.Namespace, client: Client) -> int:
    """`gpuc access request -c CLUSTER -p PROJECT [--username NAME]` and `gpuc access ls`."""
    if args.action == "request":
        if not args.cluster or not args.project:
            raise CliError("access request needs -c CLUSTER and -p PROJECT", EXIT_USAGE)
        body: dict[str, Any] = {
            "project": resolve_project(client, args.project),
            "cluster": args.cluster,
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
