#!/usr/bin/env python
"""Limit push-down at scale: N projects with an account on one Slurm cluster, K balances
changing per tick; slurmrestd calls per tick (goal: a constant, whatever N) and seconds per
tick (goal: < 2 s).

Real slurmrestd and slurmdbd (deploy/slurm/up.sh): the accounts go to a cluster of the bench's
own in slurmdbd (--slurm-cluster, default gpucbench, registered for the run), so the shared
cluster's associations are not touched; every account, association and the cluster are
deleted at the end. A throw-away database next to DATABASE_URL's (<name>_bench_pushdown)
holds the portal side. Each balance change is an UPDATE of allocation counters (as a credit
or charge leaves them); the tick is accounts_sync(): wanted limits for all accounts in a
constant number of queries, diff against what was pushed, one batched push of the changed.

    python bench/pushdown.py [--projects 10000] [--changes 1000] [--ticks 5]
    GPUC_SLURM_ENV=/var/lib/gpucommons-slurm-24.11/env python bench/pushdown.py  # Slurm 24.11

The cluster's env file (GPUC_SLURM_ENV, default the 22.05 one) names its slurmrestd and its
commands (SLURM_BIN, SLURM_CONF); the API version is negotiated as the portal does (the local
stand-in answers like --api-version). On 24.11 run it with --existing-cluster (--slurm-cluster
gpucommons2411): its slurmdbd files a new account on a cluster that has no slurmctld with a
broken lineage ("We can't find assoc 1 on cluster gpucbench") and keeps none of its limits,
which the read-back at the end shows (0 of 200).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Organization, Project, ProjectMember, User  # noqa: E402
from jobs.backends import get_backend  # noqa: E402
from jobs.backends.slurm import SlurmBackend  # noqa: E402
from jobs.models import ClusterAccount, SchedulerAccount  # noqa: E402
from jobs.services import accounts_sync, accounts_wanted  # noqa: E402
from quotas.models import Allocation, Cluster  # noqa: E402

ENV_FILE = Path(os.environ.get("GPUC_SLURM_ENV", "/var/lib/gpucommons-slurm/env"))
UNIX_USER = "gpuc-test1"
BATCH = 5000


class LocalSlurmdb(ThreadingHTTPServer):
    """A stand-in for slurmrestd's accounting API (--server local): the subset the portal uses
    (accounts, associations: GET with an account list, POST add/modify, DELETE), kept in
    memory with no cost of its own, to measure the portal's side of a tick at any scale."""

    def __init__(self, port: int, api_version: str) -> None:
        super().__init__(("127.0.0.1", port), _LocalHandler)
        self.api_version = api_version
        self.accounts: set[str] = set()
        self.assocs: dict[tuple[str, str], dict[str, Any]] = {}


class _LocalHandler(BaseHTTPRequestHandler):
    server: LocalSlurmdb

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps({"errors": [], **body}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _query(self) -> tuple[str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        query = parse_qs(url.query)  # "a,b" (v0.0.38) or repeated (later versions)
        return url.path.rstrip("/"), {
            k: [item for value in v for item in value.split(",")] for k, v in query.items()
        }

    def do_GET(self) -> None:
        path, query = self._query()
        if path.startswith("/openapi"):
            version = self.server.api_version
            paths = [f"/slurm/{version}/jobs", f"/slurmdb/{version}/associations"]
            self._answer({"paths": {p: {} for p in paths}})
            return
        if path.endswith("/accounts"):
            self._answer({"accounts": [{"name": n} for n in sorted(self.server.accounts)]})
            return
        wanted = set(query.get("account", []))
        found = [a for (acct, _), a in self.server.assocs.items() if acct in wanted]
        self._answer({"associations": found})

    def do_POST(self) -> None:
        path, _ = self._query()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if path.endswith("/accounts"):
            self.server.accounts.update(a["name"] for a in body["accounts"])
        else:
            for assoc in body["associations"]:
                key = (assoc["account"], assoc.get("user") or "")
                stored = self.server.assocs.setdefault(key, {"account": key[0], "user": key[1]})
                stored.update({k: v for k, v in assoc.items() if k == "max"})
                stored["user"] = key[1] or None
        self._answer({})

    def do_DELETE(self) -> None:
        _, query = self._query()
        for account in query.get("account", []):
            for user in query.get("user", []):
                self.server.assocs.pop((account, user), None)
        self._answer({})


def read_env() -> dict[str, str]:
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def make_world(
    n: int, slurm_cluster: str, prefix: str, new_per_tick: int, url: str | None
) -> Cluster:
    env = read_env()
    cluster = Cluster.objects.create(
        name="bench-pushdown",
        kind=Cluster.Kind.SLURM,
        options={
            "url": url or env["SLURM_REST_URL"],
            "jwt_key_file": env["SLURM_JWT_KEY_FILE"],
            "shared_root": env["SLURM_SHARED_ROOT"],
            "partition": env.get("SLURM_PARTITION", "gpu"),
            "account": env.get("SLURM_ACCOUNT", "gpucommons"),
            "manage_accounts": True,
            "slurm_cluster": slurm_cluster,
            "account_prefix": prefix,
            "read_timeout": 600,
            "new_accounts_per_tick": new_per_tick,
            "pushes_per_tick": 100_000,
        },
    )
    user = User.objects.create(username="bench-pi", email="bench-pi@example.org")
    ClusterAccount.objects.create(user=user, cluster=cluster, username=UNIX_USER, uid=1001)
    past = timezone.now() - timedelta(days=1)
    end = timezone.now() + timedelta(days=365)
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        orgs = Organization.objects.bulk_create(
            Organization(name=f"Org {i}", slug=f"org-{i}") for i in range(start, start + count)
        )
        projects = Project.objects.bulk_create(
            Project(organization=o, name=f"P {o.slug}", slug="p") for o in orgs
        )
        ProjectMember.objects.bulk_create(
            ProjectMember(project=p, user=user, role=ProjectMember.Role.PI) for p in projects
        )
        allocations = Allocation.objects.bulk_create(
            Allocation(project=p, starts_at=past, ends_at=end, credited=Decimal(100_000))
            for p in projects
        )
        Allocation.clusters.through.objects.bulk_create(
            Allocation.clusters.through(allocation_id=a.pk, cluster_id=cluster.pk)
            for a in allocations
        )
    return cluster


def count_calls(backend: SlurmBackend) -> Counter[str]:
    """Count the backend's slurmrestd calls by method (instrumentation of our own client)."""
    calls: Counter[str] = Counter()
    real = backend.rest.call

    def counted(method: str, path: str, **kwargs: Any) -> Any:
        calls[method] += 1
        return real(method, path, **kwargs)

    backend.rest.call = counted  # type: ignore[method-assign]
    return calls


def sacctmgr_argv() -> list[str]:
    """The cluster's own sacctmgr (its SLURM_BIN; SLURM_CONF is set by command_env)."""
    folder = read_env().get("SLURM_BIN")
    return [f"{folder}/sacctmgr" if folder else shutil.which("sacctmgr") or "/usr/bin/sacctmgr"]


def command_env() -> dict[str, str]:
    conf = read_env().get("SLURM_CONF")
    return {**os.environ, **({"SLURM_CONF": conf} if conf else {})}


def cleanup(backend: SlurmBackend, slurm_cluster: str, prefix: str, own_cluster: bool) -> None:
    """Remove the bench's associations and accounts (and its own cluster) from slurmdbd."""
    t0 = time.perf_counter()
    sacctmgr = sacctmgr_argv()
    body = backend.dbd_call("GET", "/accounts", user="slurm") or {}
    names = [a["name"] for a in body.get("accounts", []) if a.get("name", "").startswith(prefix)]
    if own_cluster:
        subprocess.run(
            [*sacctmgr, "-i", "delete", "cluster", slurm_cluster],
            capture_output=True,
            timeout=600,
            env=command_env(),
        )
    for i in range(0, len(names), 200):
        chunk = ",".join(names[i : i + 200])
        for what in (["user", "where", f"account={chunk}"], ["account", f"name={chunk}"]):
            subprocess.run(
                [*sacctmgr, "-i", "delete", *what],
                capture_output=True,
                timeout=600,
                env=command_env(),
            )
    print(f"  cleanup: {len(names)} accounts deleted"
          f"{f' and cluster {slurm_cluster}' if own_cluster else ''} "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=1_000, help="balances changed per tick")
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--slurm-cluster", default="gpucbench")
    parser.add_argument(
        "--existing-cluster",
        action="store_true",
        help="--slurm-cluster is a real cluster (with its parent account): only the bench's "
        "accounts are made and removed, never the cluster",
    )
    parser.add_argument("--new-per-tick", type=int, default=50, help="new_accounts_per_tick")
    parser.add_argument(
        "--server",
        choices=("real", "local"),
        default="real",
        help="real: the dev cluster's slurmrestd/slurmdbd; local: an in-memory stand-in",
    )
    parser.add_argument("--port", type=int, default=8650, help="the local server's port")
    parser.add_argument(
        "--api-version", default="v0.0.38", help="the version the local stand-in answers as"
    )
    args = parser.parse_args()
    prefix = "bpd"

    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench_pushdown"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    backend: SlurmBackend | None = None
    own_cluster = False
    try:
        local: LocalSlurmdb | None = None
        if args.server == "local":
            local = LocalSlurmdb(args.port, args.api_version)
            threading.Thread(target=local.serve_forever, daemon=True).start()
        where = (
            f"local in-memory slurmdb stand-in on :{args.port}"
            if local
            else f"real slurmrestd, slurmdbd cluster {args.slurm_cluster}"
        )
        print(f"bench/pushdown.py on {connection.vendor}; {where} ({ENV_FILE})")
        t0 = time.perf_counter()
        cluster = make_world(
            args.projects,
            args.slurm_cluster,
            prefix,
            args.new_per_tick,
            f"http://127.0.0.1:{args.port}" if local else None,
        )
        print(f"  setup: {args.projects} projects with an allocation on one cluster in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        found = get_backend(cluster)
        assert isinstance(found, SlurmBackend)
        backend = found
        calls = count_calls(backend)
        sacctmgr = sacctmgr_argv()
        own_cluster = not args.existing_cluster and local is None
        for argv in (
            ["add", "cluster", args.slurm_cluster],
            ["add", "account", "gpucommons", f"cluster={args.slurm_cluster}"],
        ):  # what deploy/slurm/up.sh does for the real cluster
            if own_cluster:
                subprocess.run(
                    [*sacctmgr, "-i", *argv], capture_output=True, timeout=120, env=command_env()
                )

        print(f"  slurmrestd API spoken: {backend.api.version}")
        calls.clear()
        t0 = time.perf_counter()
        creation_ticks = 0
        slowest = 0.0
        while True:
            t1 = time.perf_counter()
            first = accounts_sync(cluster=cluster)
            slowest = max(slowest, time.perf_counter() - t1)
            creation_ticks += 1
            assert not first.refused, first.refused
            if not first.deferred:
                break
        spent = time.perf_counter() - t0
        print(f"  creating {args.projects} accounts (+ their association) took "
              f"{creation_ticks} ticks ({cluster.options.get('new_accounts_per_tick', 50)} new "
              f"per tick), {spent:.1f} s in all, slowest tick {slowest:.2f} s, slurmrestd "
              f"calls {sum(calls.values())} {dict(calls)}")  # fmt: skip

        rng = random.Random(42)
        ids = list(Allocation.objects.values_list("pk", flat=True))
        per_tick: list[tuple[float, int, int]] = []
        for _ in range(args.ticks):
            changed = rng.sample(ids, min(args.changes, len(ids)))
            Allocation.objects.filter(pk__in=changed).update(credited=F("credited") + 7)
            calls.clear()
            t0 = time.perf_counter()
            if os.environ.get("BENCH_PROFILE"):
                import cProfile
                import pstats

                with cProfile.Profile() as prof:
                    tick = accounts_sync(cluster=cluster)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            else:
                tick = accounts_sync(cluster=cluster)
            per_tick.append((time.perf_counter() - t0, sum(calls.values()), tick.pushed))
            assert not tick.refused, tick.refused
        calls.clear()
        t0 = time.perf_counter()
        idle = accounts_sync(cluster=cluster)
        idle_s = time.perf_counter() - t0
        for i, (seconds, n_calls, pushed) in enumerate(per_tick, 1):
            print(f"  tick {i}: {args.changes} balances changed -> pushed {pushed} accounts "
                  f"in {seconds:.2f} s with {n_calls} slurmrestd calls")  # fmt: skip
        secs = sorted(s for s, _, _ in per_tick)
        print(f"  -> seconds per tick: median {secs[len(secs) // 2]:.2f}, max {secs[-1]:.2f}; "
              f"slurmrestd calls per tick: {sorted({c for _, c, _ in per_tick})}")  # fmt: skip
        print(f"  idle tick (nothing changed): {idle_s:.2f} s, {sum(calls.values())} calls, "
              f"{idle.unchanged} accounts unchanged")  # fmt: skip
        assert SchedulerAccount.objects.filter(cluster=cluster).count() == args.projects
        # What slurmdbd holds, read back for a sample of the accounts (a push slurmdbd dropped
        # silently would otherwise look fast).
        wanted = accounts_wanted(cluster=cluster)
        sample = rng.sample(wanted, min(200, len(wanted)))
        held = backend.read_accounts([w.spec.name for w in sample])
        good = sum(
            1
            for w in sample
            if w.spec.name in held
            and dict(held[w.spec.name].limits) == dict(backend.account_limits(w.spec))
            and tuple(held[w.spec.name].users) == w.spec.users
        )
        print(f"  read back: {good} of {len(sample)} sampled accounts hold exactly the pushed "
              f"limits and users")  # fmt: skip
    finally:
        if backend is not None and args.server == "real":
            cleanup(backend, args.slurm_cluster, prefix, own_cluster)
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
