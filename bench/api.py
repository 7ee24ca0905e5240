#!/usr/bin/env python
"""API request cost, in one run on one machine: the portal's hot endpoints against a bare DRF
view (50 static items, no authentication, no database; bench/bare_urls.py) served by the same
gunicorn configuration (deploy/gunicorn.conf.py, `--procs` gthread workers), loaded with wrk.

  GET  /bare/                                   the floor (same settings, middleware, renderer)
  GET  /api/v1/me/                              goal >= 0.3 x the bare view
  GET  /api/v1/jobs/?limit=50                   goal >= 0.15 x (100,000 jobs in the project,
                                                20,000 of another tenant)
  GET  /api/v1/allocations/?project=<uuid>      goal >= 0.3 x
  POST /api/v1/jobs/                            single submissions on the simulated backend

Each HTTP figure is printed with how wrk's kept-alive connections were spread over the gunicorn
workers half-way through the run ([8+8], [16+0]; bench/spread.py says why they can land
unevenly).

Before the HTTP runs it measures each endpoint in-process (Django's test client, no HTTP): CPU
milliseconds and SQL statements per request, the figures to iterate on when the machine is busy.

Production settings (DJANGO_DEBUG=false, DB_CONN_MAX_AGE=60), bearer-token authentication,
the Redis cache of CACHE_URL. Creates and drops a throw-away database next to DATABASE_URL's
(<name>_bench_api). Needs wrk (Debian: `apt-get install -y wrk`); without it, or with
`--load python`, a bounded Python load generator (threads with kept-alive connections) is used.

    python bench/api.py [--jobs 100000] [--other 20000] [--duration 10] [--threads 2]
                        [--connections 16] [--procs 2] [--gthreads N] [--load wrk|python]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from io import StringIO
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("API_THROTTLE_USER", "100000000/hour")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DB_CONN_MAX_AGE", "60")
if os.environ["DJANGO_DEBUG"].lower() in ("false", "0", "no", "off"):
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(64))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Organization, Project, ProjectMember, User  # noqa: E402
from bench.spread import connection_spread  # noqa: E402
from jobs.models import Job  # noqa: E402
from quotas.models import Cluster  # noqa: E402

STATES = ["completed"] * 7 + ["failed", "running", "queued", "cancelled", "timeout"]
GOALS = {"me": 0.3, "jobs": 0.15, "allocations": 0.3}
HEADERS = {"X-Forwarded-Proto": "https"}  # as behind the TLS proxy (SECURE_SSL_REDIRECT is on)


def bulk_jobs(project: Project, user: User, cluster: Cluster, count: int) -> None:
    now = timezone.now()
    for start in range(0, count, 10_000):
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
            for i in range(start, min(count, start + 10_000))
        )


def make_world(jobs: int, other: int) -> dict[str, Any]:
    """bootstrap_demo's tenant on the simulated backend with `jobs` jobs, and another tenant
    with `other` jobs on the same cluster (which must not show)."""
    out = StringIO()
    call_command(
        "bootstrap_demo", "--json", "--backend", "simulated", "--su", "1000000000", stdout=out
    )
    world = json.loads(out.getvalue())
    user = User.objects.get(username=world["username"])
    project = Project.objects.get(uuid=world["project"]["uuid"])
    cluster = Cluster.objects.get(uuid=world["cluster"]["uuid"])
    bulk_jobs(project, user, cluster, jobs)
    stranger = User.objects.create(username="bench-other", email="other@example.org")
    org = Organization.objects.create(name="Other", slug="bench-other")
    elsewhere = Project.objects.create(organization=org, name="Other", slug="bench-other")
    ProjectMember.objects.create(project=elsewhere, user=stranger, role=ProjectMember.Role.PI)
    bulk_jobs(elsewhere, stranger, cluster, other)
    if connection.vendor == "postgresql":
        # As autovacuum leaves a table that has been around: its statistics and visibility map
        # up to date. Otherwise autovacuum's pass over the 120,000 new rows may land in one of
        # the measured runs.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    gpu_types = world["cluster"]["gpu_types"]
    world["submit"] = {
        "project": world["project"]["uuid"],
        "cluster": world["cluster"]["name"],
        "name": "bench",
        "script": "#!/bin/bash\ntrue\n",
        "gpus": 1,
        **({"gpu_type": gpu_types[0]} if gpu_types else {}),
        "cpus": 1,
        "memory_mb": 1024,
        "time_limit_minutes": 10,
    }
    return world


def endpoints(world: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(label, method, path, body) of the portal's measured requests."""
    return [
        ("me", "GET", "/api/v1/me/", None),
        ("jobs", "GET", "/api/v1/jobs/?limit=50", None),
        ("allocations", "GET", f"/api/v1/allocations/?project={world['project']['uuid']}", None),
        ("submit", "POST", "/api/v1/jobs/", world["submit"]),
    ]


# --- in-process: CPU and SQL statements per request ---------------------------------------


def _measure(call: Any, count: int) -> tuple[float, int]:
    for _ in range(5):  # imports, URL resolution, prepared caches, the connection
        call()
    with CaptureQueriesContext(connection) as queries:
        call()
    statements = len(queries.captured_queries)  # before the next request resets the log
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) * 1000 / count, statements


def in_process(world: dict[str, Any], count: int) -> dict[str, tuple[float, int]]:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {world['token']}")

    def caller(method: str, path: str, body: dict[str, Any] | None) -> Any:
        def call() -> None:
            if method == "GET":
                response = client.get(path, secure=True)
            else:
                response = client.post(path, body, content_type="application/json", secure=True)
            assert response.status_code in (200, 201), (path, response.status_code)

        return call

    with override_settings(ROOT_URLCONF="bench.bare_urls"):
        figures = {"bare": _measure(caller("GET", "/bare/", None), count)}
    for label, method, path, body in endpoints(world):
        figures[label] = _measure(caller(method, path, body), count)
    return figures


# --- over HTTP: gunicorn + wrk ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gunicorn(settings_module: str, procs: int, threads: int | None) -> tuple[Any, str]:
    db = connection.settings_dict
    port = free_port()
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=(
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(procs),
    )
    if threads:
        env["GUNICORN_THREADS"] = str(threads)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    log = open(f"/tmp/bench-api-gunicorn-{os.getpid()}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [gunicorn, "-c", "deploy/gunicorn.conf.py", "portal.wsgi"],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if urllib3.request("GET", f"{url}/healthz", retries=False).status < 500:
                return proc, url
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"gunicorn ({settings_module}) did not answer /healthz within 30 s")


def stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def check(url: str, method: str, path: str, body: Any, token: str | None) -> None:
    headers = {**HEADERS, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = json.dumps(body).encode() if body is not None else None
    for _ in range(8):  # warm every worker a little
        response = urllib3.request(method, url + path, body=payload, headers=headers)
        if response.status not in (200, 201):
            raise SystemExit(f"{method} {path} answered {response.status}: {response.data[:300]!r}")


def run_wrk(
    url: str, method: str, path: str, body: Any, token: str | None, args: argparse.Namespace
) -> float:
    """Requests per second from wrk; every answer must be 2xx (wrk counts the others)."""
    lines = [f'wrk.method = "{method}"', 'wrk.headers["X-Forwarded-Proto"] = "https"']
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = [[{json.dumps(body)}]]")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        out = subprocess.run(
            ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
             "--timeout", "10s", "-s", script.name, url + path],
            capture_output=True, text=True, check=True, timeout=args.duration + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"{method} {path}: {match.group(1)} answers were not 2xx\n{out}")
    if re.search(r"Socket errors: .*timeout [1-9]", out):
        print(f"    (wrk reports timeouts on {path})")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(match.group(1))


def measured(
    load: Any, url: str, method: str, path: str, body: Any, token: str | None, args: Any
) -> tuple[float, str]:
    """(requests per second, the connections' spread over the workers half-way through)."""
    spread: list[str] = []
    port = int(url.rsplit(":", 1)[1])
    sampler = threading.Timer(
        args.duration / 2, lambda: spread.append(connection_spread(port, args.procs))
    )
    sampler.start()
    try:
        rate = load(url, method, path, body, token, args)
    finally:
        sampler.cancel()
    return rate, spread[0] if spread else "?"


def run_python(
    url: str, method: str, path: str, body: Any, token: str | None, args: argparse.Namespace
) -> float:
    """A bounded load generator: `--connections` threads, one kept-alive connection each,
    for `--duration` seconds."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=args.connections)
    headers = {**HEADERS, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = json.dumps(body).encode() if body is not None else None
    done = [0] * args.connections
    deadline = time.perf_counter() + args.duration

    def client(index: int) -> None:
        while time.perf_counter() < deadline:
            response = pool.request(method, path, body=payload, headers=headers, retries=False)
            assert response.status in (200, 201), response.data[:300]
            done[index] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(args.connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--other", type=int, default=20_000, help="jobs of another tenant")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--procs", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--gthreads", type=int, default=None, help="threads per worker (default: the config's)"
    )
    parser.add_argument("--in-process", type=int, default=200, help="requests per endpoint")
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk")
    args = parser.parse_args()
    if args.load == "wrk" and shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install -y wrk): using --load python")
        args.load = "python"
    load = run_wrk if args.load == "wrk" else run_python

    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench_api"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        started = time.perf_counter()
        world = make_world(args.jobs, args.other)
        print(
            f"bench/api.py on {connection.vendor} ({connection.settings_dict['NAME']}): "
            f"{args.jobs} + {args.other} jobs in {time.perf_counter() - started:.0f} s; "
            f"load {args.load} -t{args.threads} -c{args.connections} {args.duration}s against "
            f"gunicorn {args.procs} x {args.gthreads or 'default'} threads; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print("  in-process, per request:")
        for label, (cpu_ms, queries) in in_process(world, args.in_process).items():
            print(f"    {label:12s} {cpu_ms:6.2f} ms CPU   {queries:3d} SQL statements")
        connections.close_all()

        token = world["token"]
        rates: dict[str, tuple[float, str]] = {}
        server, url = start_gunicorn("bench.bare_settings", args.procs, args.gthreads)
        try:
            check(url, "GET", "/bare/", None, None)
            rates["bare"] = measured(load, url, "GET", "/bare/", None, None, args)
        finally:
            stop(server)
        server, url = start_gunicorn("portal.settings", args.procs, args.gthreads)
        try:
            for label, method, path, body in endpoints(world):
                check(url, method, path, body, token)
                rates[label] = measured(load, url, method, path, body, token, args)
        finally:
            stop(server)
        bare, spread = rates["bare"]
        print(
            f"  over HTTP (load average {os.getloadavg()[0]:.1f}; [connections per gunicorn "
            "worker half-way through each run])"
        )
        print(f"    {'bare DRF view':28s} {bare:8.0f} req/s  [{spread}]")
        for label, method, path, _ in endpoints(world):
            rate, spread = rates[label]
            ratio = rate / bare
            goal = GOALS.get(label)
            verdict = f"goal >= {goal} x: {'met' if ratio >= goal else 'NOT met'}" if goal else ""
            name = f"{method} {path.split('?')[0]}"
            print(f"    {name:28s} {rate:8.0f} req/s  {ratio:5.3f} x bare  [{spread}]  {verdict}")
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
