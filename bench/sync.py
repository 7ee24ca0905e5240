#!/usr/bin/env python
"""Sync + finalisation throughput on the simulated backend (goal: >= 2,000 state changes/s;
backend calls per sync tick independent of the number of jobs).

Creates a throw-away database next to DATABASE_URL's (<name>_bench_sync), fills it with N
queued jobs already handed to a simulated cluster (each with its hold, made in bulk), then
advances the simulated clock tick by tick and times cluster_sync(), which polls, records
transitions and finalises (charges) the jobs that ended. Run it twice as big to see that the
calls per tick stay the same.

    python bench/sync.py [--jobs 200000] [--gpus 20000] [--tick 300] [--max-seconds 90]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# Production settings, as in bench/api.py and bench/submit.py: with DEBUG on, Django logs every
# query with its parameters spelled out, which for a sync's array-bound batches costs more CPU
# than the sync itself.
os.environ.setdefault("DJANGO_DEBUG", "false")
if os.environ["DJANGO_DEBUG"].lower() in ("false", "0", "no", "off"):
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(64))

import django

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Organization, Project, ProjectMember, User  # noqa: E402
from jobs.backends import get_backend  # noqa: E402
from jobs.backends.base import JobSpec  # noqa: E402
from jobs.backends.simulated import SimulatedBackend  # noqa: E402
from jobs.models import ClusterAccount, Job  # noqa: E402
from jobs.services import cluster_sync  # noqa: E402
from quotas.models import Allocation, Cluster, Hold, LedgerEntry, Rate  # noqa: E402
from quotas.reconcile import reconcile_ledger  # noqa: E402
from quotas.services import estimate, ledger_credit  # noqa: E402

BATCH = 5000


def make_world(tag: str, *, jobs: int, gpus: int, seed: int) -> tuple[Cluster, SimulatedBackend]:
    """A tenant, a priced simulated cluster and `jobs` queued jobs with their holds."""
    rng = random.Random(seed)
    user = User.objects.create(username=f"bench-{tag}", email=f"bench-{tag}@example.org")
    org = Organization.objects.create(name=f"Bench {tag}", slug=f"bench-{tag}")
    project = Project.objects.create(organization=org, name=f"Bench {tag}", slug="bench")
    ProjectMember.objects.create(project=project, user=user, role=ProjectMember.Role.PI)
    cluster = Cluster.objects.create(
        name=f"bench-{tag}",
        kind=Cluster.Kind.SIMULATED,
        options={"gpus": gpus, "gpu_types": ["h100"], "clock": "manual"},
    )
    past = timezone.now() - timezone.timedelta(days=1)
    Rate.objects.create(
        cluster=cluster, resource="gpu_hour", gpu_type="h100", su_per_unit=2, effective_from=past
    )
    Rate.objects.create(
        cluster=cluster, resource="cpu_hour", su_per_unit="0.1", effective_from=past
    )
    ClusterAccount.objects.create(user=user, cluster=cluster, username="bench", uid=5000)
    allocation = Allocation.objects.create(
        project=project, starts_at=past, ends_at=timezone.now() + timezone.timedelta(days=30)
    )
    allocation.clusters.set([cluster])
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(10**9), key=f"bench-{tag}")

    SimulatedBackend.reset(cluster.name)
    backend = get_backend(cluster)
    assert isinstance(backend, SimulatedBackend)
    amount = estimate(
        cluster=cluster, gpus=1, gpu_type="h100", cpus=1, memory_mb=1024, time_limit_minutes=90
    ).total
    now = timezone.now()
    for start in range(0, jobs, BATCH):
        count = min(BATCH, jobs - start)
        uuids = [uuid.uuid4() for _ in range(count)]
        holds = Hold.objects.bulk_create(
            Hold(allocation=allocation, amount=amount, key=f"job:{u}", job_uuid=u) for u in uuids
        )
        LedgerEntry.objects.bulk_create(
            LedgerEntry(
                allocation=allocation,
                kind=LedgerEntry.Kind.HOLD,
                amount=amount,
                hold=h,
                job_uuid=h.job_uuid,
                idempotency_key=f"{h.key}:hold",
            )
            for h in holds
        )
        Allocation.objects.filter(pk=allocation.pk).update(held=F("held") + amount * count)
        rows = []
        for i, (u, hold) in enumerate(zip(uuids, holds, strict=True)):
            env = {"SIM_DURATION_SECONDS": str(rng.randint(60, 3600))}
            if rng.random() < 0.05:
                env["SIM_EXIT_CODE"] = "1"
            spec = JobSpec(
                uuid=u, name=f"j{start + i}", project="bench", cluster_user="bench",
                script="true", gpus=1, gpu_type="h100", cpus=1, memory_mb=1024,
                time_limit_minutes=90, env=env,
            )  # fmt: skip
            rows.append(
                Job(
                    uuid=u,
                    project=project,
                    user=user,
                    cluster=cluster,
                    name=spec.name,
                    script="true",
                    gpus=1,
                    gpu_type="h100",
                    cpus=1,
                    memory_mb=1024,
                    time_limit_minutes=90,
                    env=env,
                    state=Job.State.QUEUED,
                    backend_id=backend.submit(spec),
                    cluster_username="bench",
                    estimated_cost=amount,
                    hold=hold,
                    submitted_at=now,
                    created_at=now - timezone.timedelta(microseconds=start + i),
                )
            )
        Job.objects.bulk_create(rows)
    # A production server's autovacuum analyses tables after a bulk load like this one. Without
    # statistics (a server run with autovacuum off) the planner takes the freshly loaded tables
    # for nearly empty and picks plans that scan every unfinalised job for each batch.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return cluster, backend


def run(cluster: Cluster, backend: SimulatedBackend, *, tick: int, max_seconds: float) -> None:
    total = Job.objects.filter(cluster=cluster).count()
    changes = finalized = ticks = 0
    spent = 0.0
    calls: list[int] = []
    while finalized < total and spent < max_seconds:
        backend.advance(tick)
        started = time.perf_counter()
        result = cluster_sync(cluster=cluster)
        spent += time.perf_counter() - started
        ticks += 1
        changes += result.transitions
        finalized += result.finalized
        calls.append(result.backend_calls)
    rate = changes / spent if spent else 0.0
    print(
        f"  {total:>7} jobs: {ticks} ticks, {changes} state changes and {finalized} "
        f"finalisations in {spent:.1f} s of sync"
    )
    print(
        f"           -> {rate:,.0f} state changes/s, {finalized / spent:,.0f} finalisations/s; "
        f"backend calls per tick: min {min(calls)}, max {max(calls)}"
    )
    allocation = Allocation.objects.get(clusters=cluster)
    open_sum = sum(
        Hold.objects.filter(allocation=allocation, state="open").values_list("amount", flat=True),
        Decimal(0),
    )
    charged = LedgerEntry.objects.filter(allocation=allocation, kind="charge").count()
    assert allocation.held == open_sum, (allocation.held, open_sum)
    assert charged <= finalized
    print(f"           ledger consistent: held {allocation.held} SU = open holds; "
          f"{charged} charges")  # fmt: skip
    report = reconcile_ledger()  # every counter, hold and entry invariant, not only `held`
    assert report.ok, report.format()
    print(f"           reconcile_ledger: {report.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=2_000, help="the small run's job count")
    parser.add_argument("--gpus", type=int, default=100_000)
    parser.add_argument("--tick", type=int, default=300, help="simulated seconds per tick")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="sync time budget")
    args = parser.parse_args()

    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench_sync"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        print(f"bench/sync.py on {connection.vendor} ({connection.settings_dict['NAME']})")
        for tag, jobs, gpus in (
            ("small", args.small, max(1, args.gpus * args.small // args.jobs)),
            ("large", args.jobs, args.gpus),
        ):
            t0 = time.perf_counter()
            cluster, backend = make_world(tag, jobs=jobs, gpus=gpus, seed=42)
            print(f"  setup of {jobs} jobs ({gpus} GPUs): {time.perf_counter() - t0:.1f} s")
            run(cluster, backend, tick=args.tick, max_seconds=args.max_seconds)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
