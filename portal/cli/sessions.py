"""`gpuc session`: start an interactive session (JupyterLab, ...) and list yours. A session
opens in the browser at the printed address, through the portal's proxy and login."""

from __future__ import annotations

import argparse
from typing import Any

from portal.cli.client import EXIT_OK, EXIT_USAGE, Client, CliError
from portal.cli.output import print_json, print_table, when
from portal.cli.resolve import project_and_cluster, resolve_project


def _url(client: Client, session: dict[str, Any]) -> str:
    return f"{client.root}{session.get('session', {}).get('url', '')}"


def cmd_session(args: argparse.Namespace, client: Client) -> int:
    if args.action == "apps":
        apps = client.get("sessions/apps/")
        if args.json:
            print_json(apps)
        else:
            print_table(("APP", "NAME"), [(a["slug"], a["name"]) for a in apps])
        return EXIT_OK
    if args.action == "ls":
        sessions = client.get("sessions/").get("results", [])
        if args.json:
            print_json(sessions)
            return EXIT_OK
        rows = [
            (
                s["id"][:8],
                s["session"]["app"],
                s["state"],
                when(s.get("created_at")),
                _url(client, s),
            )
            for s in sessions
        ]
        print_table(("ID", "APP", "STATE", "CREATED", "OPEN AT"), rows)
        return EXIT_OK
    if not args.app:
        raise CliError("usage: gpuc session start APP --time MINUTES", EXIT_USAGE)
    if args.time is None:
        raise CliError("give a time limit with --time (minutes)", EXIT_USAGE)
    project, cluster = project_and_cluster(args)
    body: dict[str, Any] = {
        "app": args.app,
        "project": resolve_project(client, project),
        "cluster": cluster,
        "time_limit_minutes": args.time,
    }
    for key in ("gpus", "gpu_type", "cpus", "memory_mb", "partition"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.share:
        body["shared_with_managers"] = True
    session = client.post("sessions/", body)
    if args.json:
        print_json(session)
    else:
        print(f"{session['id']}: {session['state']}, {session['held']} SU held")
        print(f"Open it at {_url(client, session)} once it runs (gpuc session ls).")
    return EXIT_OK
