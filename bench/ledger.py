#!/usr/bin/env python
"""Ledger benchmark: holds per second on one hot allocation and spread over 1,000 allocations,
settles per second, a 500-way race for a few slots, and the overspend count (must be 0).

Runs against the PostgreSQL of DATABASE_URL in a database of its own (created and dropped
with Django's test-database machinery, named bench_ledger_<db>), so it never touches real data.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gpucommons .venv/bin/python bench/ledger.py
    ... bench/ledger.py --threads 8 --hot-holds 4000 --spread-holds 8000 --allocations 1000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from django.utils import timezone  # noqa: E402

HOLD = Decimal("2.5000")


@dataclass
class Result:
    scenario: str
    threads: int
    attempts: int
    ok: int
    refused: int
    errors: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0


def run_threads(
    name: str, threads: int, jobs: list[Callable[[], bool]], *, barrier: bool = True
) -> Result:
    """Run the callables on `threads` threads (each with its own connection); time the lot."""
    from quotas.exceptions import InsufficientQuota

    chunks = [jobs[i::threads] for i in range(threads)]
    counts = {"ok": 0, "refused": 0, "errors": 0}
    first_error: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def worker(chunk: list[Callable[[], bool]]) -> None:
        ok = refused = errors = 0
        try:
            connection.ensure_connection()  # connect before the clock starts
            start.wait()
            for job in chunk:
                try:
                    job()
                    ok += 1
                except InsufficientQuota:
                    refused += 1
                except Exception as exc:
                    errors += 1
                    if not first_error:
                        first_error.append(repr(exc))
        finally:
            connections.close_all()
            with lock:
                counts["ok"] += ok
                counts["refused"] += refused
                counts["errors"] += errors

    pool = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for t in pool:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    if first_error:
        print(f"  ! {name}: first error: {first_error[0]}", file=sys.stderr)
    return Result(
        name, threads, len(jobs), counts["ok"], counts["refused"], counts["errors"], elapsed
    )


def run_processes(name: str, processes: int, jobs: list[Callable[[], bool]]) -> Result:
    """Like run_threads, with forked processes: no GIL between the workers, as in production
    (gunicorn and Celery workers are separate processes)."""
    import multiprocessing

    from quotas.exceptions import InsufficientQuota

    ctx = multiprocessing.get_context("fork")
    chunks = [jobs[i::processes] for i in range(processes)]
    start = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    connections.close_all()  # children must open their own connections

    def worker(index: int) -> None:
        ok = refused = errors = 0
        first = ""
        connection.ensure_connection()
        start.wait()
        for job in chunks[index]:
            try:
                job()
                ok += 1
            except InsufficientQuota:
                refused += 1
            except Exception as exc:
                errors += 1
                first = first or repr(exc)
        connections.close_all()
        out.put((ok, refused, errors, first))

    pool = [ctx.Process(target=worker, args=(i,)) for i in range(processes)]
    for p in pool:
        p.start()
    start.wait()
    began = time.perf_counter()
    counts = [out.get() for _ in pool]
    elapsed = time.perf_counter() - began
    for p in pool:
        p.join()
    if errors := [c[3] for c in counts if c[3]]:
        print(f"  ! {name}: first error: {errors[0]}", file=sys.stderr)
    return Result(
        name,
        processes,
        len(jobs),
        sum(c[0] for c in counts),
        sum(c[1] for c in counts),
        sum(c[2] for c in counts),
        elapsed,
    )


def make_world(n_allocations: int, hot_credit: Decimal, spread_credit: Decimal):
    """One cluster; two hot projects (threads, processes) and n others, one allocation each."""
    from accounts.models import Organization, Project
    from quotas.models import Allocation, Cluster, Rate
    from quotas.services import ledger_credit

    cluster = Cluster.objects.create(name="bench", kind=Cluster.Kind.SIMULATED)
    Rate.objects.create(
        cluster=cluster,
        resource=Rate.Resource.GPU_HOUR,
        su_per_unit=Decimal(1),
        effective_from=timezone.now() - timedelta(days=1),
    )
    org = Organization.objects.create(name="Bench", slug="bench")
    projects = Project.objects.bulk_create(
        Project(organization=org, name=f"p{i}", slug=f"p{i}") for i in range(n_allocations + 2)
    )
    ends = timezone.now() + timedelta(days=365)
    starts = timezone.now() - timedelta(days=1)
    allocations = Allocation.objects.bulk_create(
        Allocation(project=p, starts_at=starts, ends_at=ends) for p in projects
    )
    Through = Allocation.clusters.through
    Through.objects.bulk_create(
        Through(allocation_id=a.pk, cluster_id=cluster.pk) for a in allocations
    )
    hots, spread = allocations[:2], allocations[2:]
    for a in hots:
        ledger_credit(actor=None, allocation=a, amount=hot_credit, key=f"bench-hot-{a.pk}")
    for a in spread:
        ledger_credit(actor=None, allocation=a, amount=spread_credit, key=f"bench-{a.pk}")
    return cluster, projects[:2], projects[2:], hots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--hot-holds", type=int, default=4000)
    parser.add_argument("--hot-fits", type=int, default=3000, help="holds the hot one can take")
    parser.add_argument("--spread-holds", type=int, default=8000)
    parser.add_argument("--allocations", type=int, default=1000)
    parser.add_argument("--race", type=int, default=500, help="holds racing for --race-fits")
    parser.add_argument("--race-fits", type=int, default=37)
    parser.add_argument("--race-threads", type=int, default=40)
    args = parser.parse_args()

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        print("bench/ledger.py needs PostgreSQL: set DATABASE_URL=postgres://...", file=sys.stderr)
        return 2
    db.setdefault("TEST", {})["NAME"] = f"bench_ledger_{db['NAME']}"
    print(f"Creating {db['TEST']['NAME']} (migrations)...", file=sys.stderr)
    old = setup_databases(verbosity=0, interactive=False)
    try:
        return run(args)
    finally:
        connections.close_all()
        teardown_databases(old, verbosity=0)


def run(args: argparse.Namespace) -> int:
    from django.db.models import F

    from accounts.models import Project
    from quotas.models import Allocation, Hold
    from quotas.reconcile import reconcile_ledger
    from quotas.services import ledger_credit, ledger_hold, ledger_settle

    cluster, hot_projects, spread_projects, hots = make_world(
        args.allocations, HOLD * args.hot_fits, HOLD * 1000
    )
    results: list[Result] = []
    rng = random.Random(42)

    def hold_job(project, key: str) -> Callable[[], bool]:
        return lambda: bool(
            ledger_hold(actor=None, project=project, cluster=cluster, amount=HOLD, key=key)
        )

    hot_left = []
    for i, (kind, runner, n) in enumerate(
        (("threads", run_threads, args.threads), ("processes", run_processes, args.processes))
    ):
        jobs = [hold_job(hot_projects[i], f"hot-{kind}-{j}") for j in range(args.hot_holds)]
        results.append(runner(f"holds, one hot allocation ({kind})", n, jobs))
        hots[i].refresh_from_db()
        hot_left.append(hots[i].available)
        jobs = [
            hold_job(rng.choice(spread_projects), f"spread-{kind}-{j}")
            for j in range(args.spread_holds)
        ]
        results.append(runner(f"holds, {args.allocations:,} allocations ({kind})", n, jobs))

    holds = list(Hold.objects.filter(state=Hold.State.OPEN).order_by("?"))
    settle_jobs = [
        (lambda h=h: bool(ledger_settle(actor=None, hold=h, actual=HOLD * Decimal("0.6"))))
        for h in holds
    ]
    half = len(settle_jobs) // 2
    results.append(run_threads("settles (threads)", args.threads, settle_jobs[:half]))
    results.append(run_processes("settles (processes)", args.processes, settle_jobs[half:]))

    race_project = Project.objects.create(
        organization=hot_projects[0].organization, name="race", slug="race"
    )
    race_alloc = Allocation.objects.create(
        project=race_project, ends_at=timezone.now() + timedelta(days=30)
    )
    race_alloc.clusters.add(cluster)
    # Exactly race_fits holds, plus a remainder too small for one more.
    ledger_credit(
        actor=None,
        allocation=race_alloc,
        amount=HOLD * args.race_fits + Decimal("1.0001"),
        key="race-credit",
    )
    fits = args.race_fits
    race_jobs = [hold_job(race_project, f"race-{i}") for i in range(args.race)]
    race = run_threads(f"race: {args.race} holds for {fits} slots", args.race_threads, race_jobs)
    results.append(race)

    report = reconcile_ledger(stale_hold_days=10_000)
    overspend_kinds = {"counter", "held", "overspent", "expired", "hold"}
    overspent = Allocation.objects.filter(credited__lt=F("held") + F("charged")).count()
    drift = sum(1 for p in report.problems if p.kind in overspend_kinds)

    width = max(len(r.scenario) for r in results) + 2
    print()
    print(
        f"GPU Commons ledger benchmark · PostgreSQL {connection.pg_version // 10000} · "
        f"{os.cpu_count()} CPUs · hold = {HOLD} SU"
    )
    header = (
        f"{'scenario':<{width}}{'workers':>8}{'attempts':>10}{'placed':>9}{'refused':>9}"
        f"{'errors':>8}{'seconds':>9}{'ops/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.scenario:<{width}}{r.threads:>8}{r.attempts:>10}{r.ok:>9}{r.refused:>9}"
            f"{r.errors:>8}{r.seconds:>9.2f}{r.per_second:>9.0f}"
        )
    print("-" * len(header))
    race_alloc.refresh_from_db()
    expected_left = HOLD * args.hot_fits - HOLD * min(args.hot_fits, args.hot_holds)
    for r, left in zip((results[0], results[2]), hot_left, strict=True):
        print(
            f"{r.scenario}: {r.ok} of {args.hot_holds} placed, sized for {args.hot_fits}; "
            f"available left {left} SU (expected {expected_left})"
        )
    print(f"race: {race.ok} placed for {fits} slots; available left {race_alloc.available} SU")
    print(f"allocations with available < 0: {overspent}")
    print(f"allocations/holds whose counters differ from the ledger: {drift}")
    print(f"overspend count: {overspent + drift}")
    print(report.summary())
    ok = (
        overspent == 0
        and drift == 0
        and race.ok == fits
        and race_alloc.available == Decimal("1.0001")
        and all(left == expected_left for left in hot_left)
        and results[0].ok == results[2].ok == min(args.hot_fits, args.hot_holds)
        and all(r.errors == 0 for r in results)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
