"""`gpuc login`, `gpuc config` and `gpuc whoami`: who gpuc talks to, as whom, and with which
default project and cluster."""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

from portal.cli.client import (
    EXIT_OK,
    EXIT_USAGE,
    ApiError,
    Client,
    CliError,
    config_path,
    load_config,
    read_config_file,
    save_config,
)
from portal.cli.output import object_id, print_json
from portal.cli.resolve import (
    check_cluster,
    default_for,
    is_project,
    project_label,
    resolve_project,
)


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
    if kept and any(is_project(p, str(kept)) for p in projects):
        return kept
    return object_id(projects[0]) if len(projects) == 1 else None


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


def _tell_defaults(me: dict[str, Any], project: Any, cluster: Any) -> None:
    listed = me.get("projects")
    projects: list[Any] = listed if isinstance(listed, list) else []
    if project:
        match = [p for p in projects if is_project(p, str(project))]
        print(f"Default project: {project_label(match[0]) if match else project}")
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
        print_json(me)
        return EXIT_OK
    print(f"{me.get('username', '')} <{me.get('email', '')}> on {client.root}")
    default = default_for("project")
    for project in me.get("projects", []):
        mark = "  (default)" if default and is_project(project, default) else ""
        print(f"  project {project_label(project)}  {object_id(project)}{mark}")
    return EXIT_OK
