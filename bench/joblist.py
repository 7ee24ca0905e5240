#!/usr/bin/env python
"""Job list latency: p50/p95 of `GET /api/v1/jobs/?project=` 50-row pages with 100,000 jobs in
one project (goal: p95 < 50 ms), for the first page and for deep pages reached by cursor.

Creates a throw-away database next to DATABASE_URL's (<name>_bench_joblist), bulk-creates the
jobs (plus jobs of another tenant, which must not show), and times the full Django + DRF stack
in-process (authentication, the selector, keyset pagination, serialisation; no network).

    python bench/joblist.py [--jobs 100000] [--first 200] [--deep-pages 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from accounts.models import Organization, Project, ProjectMember, User  # noqa: E402
from jobs.models import Job  # noqa: E402
from quotas.models import Cluster  # noqa: E402

STATES = ["completed"] * 7 + ["failed", "running", "queued", "cancelled", "timeout"]


def make_project(tag: str, jobs: int, cluster: Cluster) -> tuple[User, Project]:
    user = User.objects.create(username=f"bench-{tag}", email=f"bench-{tag}@example.org")
    org = Organization.objects.create(name=f"Bench {tag}", slug=f"bench-{tag}")
    project = Project.objects.create(organization=org, name=f"Bench {tag}", slug=tag)
    ProjectMember.objects.create(project=project, user=user, role=ProjectMember.Role.PI)
    now = timezone.now()
    for start in range(0, jobs, 10_000):
        Job.objects.bulk_create(
            Job(
                uuid=uuid.uuid4(),
                project=project,
                user=user,
                cluster=cluster,
                name=f"job-{i}",
                script="true",
                gpus=i % 9,
                gpu_type="h100" if i % 9 else "",
                state=STATES[i % len(STATES)],
                backend_id=str(i),
                created_at=now - timezone.timedelta(seconds=i),
                estimated_cost="1.5",
                charged_cost="0.75" if i % 3 else None,
            )
            for i in range(start, min(jobs, start + 10_000))
        )
    return user, project


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   max {ordered[-1]:6.1f} ms  (n={len(ordered)})"


def timed_get(
    client: APIClient, url: str, params: dict[str, str] | None = None
) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.get(url, params)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {url} answered {response.status_code}: {response.content[:200]!r}")
    return elapsed, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--other", type=int, default=20_000, help="jobs of another tenant")
    parser.add_argument("--first", type=int, default=200, help="first-page requests")
    parser.add_argument("--deep-pages", type=int, default=2000, help="pages followed by cursor")
    args = parser.parse_args()

    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench_joblist"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        print(f"bench/joblist.py on {connection.vendor} ({connection.settings_dict['NAME']})")
        cluster = Cluster.objects.create(name="bench", kind=Cluster.Kind.SIMULATED)
        started = time.perf_counter()
        user, project = make_project("main", args.jobs, cluster)
        make_project("other", args.other, cluster)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE jobs_job")
        print(f"  setup: {args.jobs} + {args.other} jobs in {time.perf_counter() - started:.1f} s")

        client = APIClient()
        client.force_authenticate(user)
        url, params = "/api/v1/jobs/", {"project": str(project.uuid)}
        timed_get(client, url, params)  # warm up
        first = [timed_get(client, url, params)[0] for _ in range(args.first)]
        print(f"  first page           {percentiles(first)}")

        deep: list[float] = []
        seen = 0
        _, page = timed_get(client, url, params)
        seen += len(page["results"])
        while page["next"] and len(deep) < args.deep_pages:
            elapsed, page = timed_get(client, page["next"])
            deep.append(elapsed)
            seen += len(page["results"])
        print(f"  deep cursor pages    {percentiles(deep)}")
        last = deep[-max(1, len(deep) // 10) :]
        print(f"  last 10% of pages    {percentiles(last)}")
        print(
            f"  walked {seen} jobs in {len(deep) + 1} pages (all {args.jobs}: {seen == args.jobs})"
        )
        filtered = [
            timed_get(client, url, {**params, "state": "running"})[0] for _ in range(args.first)
        ]
        print(f"  state=running page   {percentiles(filtered)}")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
