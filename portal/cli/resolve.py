"""What the user typed, turned into what the API takes: a project by slug, a cluster by name,
a job by its short id; and the default project and cluster when no flag names one."""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Sequence
from typing import Any

from portal.cli.client import EXIT_USAGE, Client, CliError, config_path, read_config_file
from portal.cli.output import object_id, when
from portal.cli.parsing import is_full_job_id

SHORT_ID_LENGTH = 8  # as the portal's pages show a job id
AMBIGUOUS_SHOWN = 10  # candidates listed when a short id names several jobs


def project_label(project: dict[str, Any]) -> str:
    """'organization-slug/project-slug', as the user may type it back."""
    org = project.get("organization")
    org_slug = org.get("slug") if isinstance(org, dict) else project.get("organization_slug")
    slug = project.get("slug") or project.get("name") or object_id(project)
    return f"{org_slug}/{slug}" if org_slug else str(slug)


def is_project(project: dict[str, Any], ref: str) -> bool:
    """Whether `ref` (a uuid, slug or org/slug) names this project of an API answer."""
    return ref in (object_id(project), project.get("slug"), project_label(project))


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
        and (not org_slug or project_label(p).rpartition("/")[0] == org_slug)
    ]
    if not matches:
        raise CliError(f"no project '{ref}' among your projects (see 'gpuc whoami')")
    if len(matches) > 1:
        choices = ", ".join(project_label(p) for p in matches)
        raise CliError(f"project '{ref}' is ambiguous: say which one of {choices}")
    return object_id(matches[0])


def check_cluster(client: Client, name: str) -> str:
    """`name` if it is one of the clusters the user may use; a clear error otherwise."""
    names = [str(c.get("name")) for c in client.paginate("clusters/")]
    if name not in names:
        known = ", ".join(names) or "none"
        raise CliError(f"no cluster '{name}' among the clusters you may use ({known})")
    return name


def default_for(key: str) -> str | None:
    """A default for --project/--cluster: $GPUC_PROJECT/$GPUC_CLUSTER, else the config file."""
    value = os.environ.get(f"GPUC_{key.upper()}") or read_config_file(config_path()).get(key)
    return str(value) if value else None


def project_and_cluster(args: argparse.Namespace) -> tuple[str, str]:
    """--project and --cluster, else their defaults; a usage error naming what is missing."""
    project = args.project or default_for("project")
    cluster = args.cluster or default_for("cluster")
    if not project or not cluster:
        key = "project" if not project else "cluster"
        raise CliError(
            f"give --{key} (or set a default: 'gpuc config set {key} …', or GPUC_{key.upper()})",
            EXIT_USAGE,
        )
    return project, cluster


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
        return object_id(matches[0])
    more = " (and more)" if isinstance(page, dict) and page.get("next") else ""
    listing = "\n".join(
        f"  {object_id(j)}  {j.get('name', '')}  {j.get('state', '')}  {when(j.get('created_at'))}"
        for j in matches
    )
    raise CliError(
        f"job id '{job_id}' is ambiguous: {len(matches)} of your jobs{more} start with it; "
        f"give more of the id:\n{listing}"
    )
