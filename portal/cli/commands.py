"""The `gpuc` commands: each takes the parsed arguments, calls the API through Client and
prints the answer (a table, or JSON with --json)."""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from portal.cli.client import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    Client,
    CliError,
)
from portal.cli.download import save_download
from portal.cli.output import (
    duration,
    megabytes,
    object_id,
    print_json,
    print_table,
    related_name,
    runtime,
    when,
)
from portal.cli.parsing import parse_job_id, script_directives
from portal.cli.resolve import (
    SHORT_ID_LENGTH,
    project_and_cluster,
    resolve_job,
    resolve_project,
    short_ids,
)
from portal.formatting import (
    format_duration,
    format_su,
    format_su_rate,
    last_day_iso,
    rate_name,
)

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail", "rejected"})
DEFAULT_INTERVAL = 2.0


# --- commands --------------------------------------------------------------------------


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
    project, cluster = project_and_cluster(args)
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


def _job_name(file_name: str) -> str:
    """A job name the API accepts (letters, digits, '.', '_', '-') from a script's file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", file_name).lstrip("._-")[:128]
    return name or "job"


def _su(value: Any) -> str:
    return f"{format_su(value)} SU"


def cmd_estimate(args: argparse.Namespace, client: Client) -> int:
    answer = client.post("jobs/estimate/", _job_body(args, client))
    if args.json:
        print_json(answer)
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
        print_table(("RESOURCE", "QUANTITY", "SU/UNIT", "SU"), rows)
    cost = format_su(answer.get("estimated_cost"))
    print(f"Estimated cost: {cost} SU (held at submit, the most it costs)")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    body = _job_body(args, client)
    # A key of our own makes the POST safe to repeat when the answer is lost on the way back.
    key = args.idempotency_key or f"gpuc-{uuid.uuid4()}"
    job = client.post("jobs/", body, headers={"Idempotency-Key": key}, retries=3)
    if not args.wait:
        if args.json:
            print_json(job)
        else:
            print(object_id(job))
        return EXIT_OK
    # Waiting: stdout carries the job's own output (or, with --json, the final job), so
    # `gpuc submit --wait job.sh > out.txt` keeps what the job printed; the id and the state
    # changes go to stderr.
    job = follow_job(
        client,
        object_id(job),
        interval=args.interval,
        stream=None if args.json else "stdout",
        announce=True,
    )
    if args.json:
        print_json(job)
    elif job.get("state") != "completed":
        short = object_id(job)[:SHORT_ID_LENGTH]
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
        job: dict[str, Any] = client.get(f"jobs/{job_id}/")
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
        print_json(jobs)
        return EXIT_OK
    short = short_ids([object_id(j) for j in jobs])
    rows = [
        (
            short[object_id(j)],
            j.get("name", ""),
            j.get("state", "") + (" (direct)" if j.get("origin") == "direct" else ""),
            j.get("project_name") or related_name(j.get("project")),
            related_name(j.get("cluster")),
            j.get("gpus", ""),
            when(j.get("created_at")),
            runtime(j.get("started_at"), j.get("ended_at")),
            format_su(j.get("charged_cost") or j.get("estimated_cost")),
        )
        for j in jobs
    ]
    print_table(
        ("ID", "NAME", "STATE", "PROJECT", "CLUSTER", "GPUS", "CREATED", "RUNTIME", "SU"), rows
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    job = client.get(f"jobs/{resolve_job(client, args.job_id)}/")
    if args.json:
        print_json(job)
        return EXIT_OK
    gpus = f"{job.get('gpus', 0)}" + (f" x {job['gpu_type']}" if job.get("gpu_type") else "")
    fields = [
        ("Job", f"{job.get('name', '')} ({object_id(job)})"),
        (
            "State",
            job.get("state", "") + (f": {job['state_reason']}" if job.get("state_reason") else ""),
        ),
        ("Project", job.get("project_name") or related_name(job.get("project"))),
        (
            "Origin",
            "submitted outside the portal (found in the cluster's accounting)"
            if job.get("origin") == "direct"
            else None,
        ),
        ("User", job.get("user") or job.get("cluster_user")),
        ("Cluster", related_name(job.get("cluster"))),
        ("GPUs", gpus),
        ("CPUs", job.get("cpus")),
        ("Memory", megabytes(job.get("memory_mb"))),
        (
            "Time limit",
            f"{job.get('time_limit_minutes')} min" if job.get("time_limit_minutes") else None,
        ),
        ("Array", job.get("array")),
        ("Backend id", job.get("backend_id")),
        ("Created", when(job.get("created_at"))),
        ("Started", when(job.get("started_at"))),
        ("Ended", when(job.get("ended_at"))),
        (
            "Elapsed",
            format_duration(job["elapsed_seconds"])
            if job.get("elapsed_seconds") is not None
            else None,
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
            print(f"  {when(event.get('created_at') or event.get('at'))}  {change}{message}")
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
        print_json(items)
        return EXIT_OK
    rows = [(i.get("path", ""), i.get("size", ""), when(i.get("modified"))) for i in items]
    print_table(("PATH", "BYTES", "MODIFIED"), rows)
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
    target = None if output == "-" else Path(output or Path(path).name or "result")
    return save_download(response, target, what=path)


def cmd_balance(args: argparse.Namespace, client: Client) -> int:
    params = {"project": resolve_project(client, args.project) if args.project else None}
    allocations = list(client.paginate("allocations/", params))
    if args.json:
        print_json(allocations)
        return EXIT_OK
    columns = ("credited", "held", "charged", "available")
    rows: list[tuple[Any, ...]] = [
        (
            object_id(a),
            a.get("project_name") or related_name(a.get("project")),
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
    print_table((*headers, *(c.upper() for c in columns)), rows)
    return EXIT_OK


def cmd_clusters(args: argparse.Namespace, client: Client) -> int:
    clusters = list(client.paginate("clusters/"))
    if args.json:
        print_json(clusters)
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
            what = rate_name(
                rate.get("resource", "") + (f":{rate['gpu_type']}" if rate.get("gpu_type") else "")
            )
            print(f"  {what:<24}{format_su_rate(rate.get('su_per_unit'))} SU")
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
            parts.append(f"{megabytes(value)} {label}")
        elif key == "max_time_minutes":
            parts.append(f"{duration(value)} {label}")
        else:
            parts.append(f"{value} {label}{'' if value == 1 else 's'}")
    known = {key for key, _ in _LIMITS}
    parts += [
        f"{k}={v}" for k, v in sorted(options.items()) if k.startswith("max_") and k not in known
    ]
    return ", ".join(parts)


def cmd_access(args: argparse.Namespace, client: Client) -> int:
    """`gpuc access request -c CLUSTER -p PROJECT [--username NAME]` and `gpuc access ls`."""
    if args.action == "request":
        project, cluster = project_and_cluster(args)
        body: dict[str, Any] = {
            "project": resolve_project(client, project),
            "cluster": cluster,
        }
        if args.username:
            body["username"] = args.username
        created = client.post("cluster-access-requests/", body)
        if args.json:
            print_json(created)
            return EXIT_OK
        state = created.get("state")
        print(f"{object_id(created)}  {created.get('username')}@{created.get('cluster')}  {state}")
        if state == "pending":
            print("Facility staff will review it; you will be told by email.")
        elif state in ("approved", "provisioning"):
            print("Approved: the account is being created ('gpuc access ls' shows when it is).")
        return EXIT_OK
    requests = list(client.paginate("cluster-access-requests/"))
    if args.json:
        print_json(requests)
        return EXIT_OK
    rows = [
        (
            object_id(r)[:8],
            r.get("cluster"),
            r.get("project_name"),
            r.get("username"),
            r.get("state"),
            when(r.get("created_at")),
            r.get("reason") or "",
        )
        for r in requests
    ]
    print_table(("ID", "CLUSTER", "PROJECT", "USER", "STATE", "ASKED", "WHY"), rows)
    return EXIT_OK
