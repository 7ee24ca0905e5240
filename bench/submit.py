#!/usr/bin/env python
"""Submissions per second on the real Slurm of deploy/slurm, in one run on one machine:

  (a) raw slurmrestd: POST /slurm/v0.0.38/job/submit, `--workers` client threads;
  (b) raw sbatch: `runuser -u <user> -- sbatch ...` (argv list), `--workers` at a time;
  (c) the portal: POST /api/v1/jobs/ with a bearer token, over HTTP from `--workers` client
      threads to gunicorn started with deploy/gunicorn.conf.py (`--api-procs` gthread workers;
      before the first round a few real submissions, forwarded and cancelled, and before each
      round a few estimates warm it up), until every job has a Slurm id. Forwarding runs
      in a real Celery worker (`--forward celery`, the production path: the API commits and
      queues). With `--server client` the API runs in forked processes through Django's test
      client instead (no HTTP; `--forward eager` then forwards in the request thread after
      commit). Production settings: DJANGO_DEBUG=false, DB_CONN_MAX_AGE=60.
  (d) the portal again, the same jobs POSTed to /api/v1/jobs/batch/ in batches of `--batch`
      (50; a workflow tool or a sweep; 0 skips it); (c) and (d) are both printed, each with
      its ratios to (a) and (b).

The machine is shared, so the three are measured in turn for `--rounds` rounds and the
medians compared. The portal's tenant starts with `--history` finished jobs (20,000), as a
portal in use has, and the bench database is analysed after loading them (add_history says
why: with empty tables on a server with autovacuum off, each round ran slower than the last).

Each method also prints its CPU per job by process and the whole machine's busy and idle time
per job (/proc/stat): the machine is shared by everything measured, so a method's rate is
about what each of its submissions costs the machine. Each portal round over HTTP also prints
how the clients' connections landed on the gunicorn workers ([2+2], [3+1]; bench/spread.py).

Goals: single-job POSTs >= 0.25 x raw slurmrestd and >= 1 x raw sbatch; batch POSTs >= 0.5 x
and >= 1 x (as printed). Every job is trivial (`true`, 1 CPU, 64 MB, 1 minute) and all bench
jobs are cancelled at the end (and between phases), so the cluster is left idle. Creates a
throw-away database next to DATABASE_URL's (<name>_bench_submit).

    python bench/submit.py [--jobs 200] [--rounds 3] [--workers 4] [--api-procs 2]
                           [--server gunicorn|client] [--forward celery|eager] [--batch 50]
                           [--history 20000]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import pwd
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("API_THROTTLE_USER", "100000000/hour")
# Production settings: no DEBUG query log (it would slow every query down), and persistent
# database connections (DB_CONN_MAX_AGE) instead of a new PostgreSQL connection per request.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DB_CONN_MAX_AGE", "60")
if os.environ["DJANGO_DEBUG"].lower() in ("false", "0", "no", "off"):
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(64))

ENV_FILE = Path(os.environ.get("GPUC_SLURM_ENV", "/var/lib/gpucommons-slurm/env"))


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


SITE = read_env(ENV_FILE)
USER = os.environ.get("BENCH_USER", SITE.get("SLURM_DEMO_USER", "gpuc-demo"))
NAME = f"gpuc-bench-{os.getpid()}"
WORKDIR = f"{SITE['SLURM_SHARED_ROOT']}/{USER}"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Organization, Project, ProjectMember, User  # noqa: E402
from accounts.services import api_token_create  # noqa: E402
from bench.spread import connection_spread  # noqa: E402
from jobs.backends.slurm.rest import SlurmRest  # noqa: E402
from jobs.models import ClusterAccount, Job, JobEvent  # noqa: E402
from quotas.models import Allocation, Cluster, Rate  # noqa: E402
from quotas.services import ledger_charge_direct_many, ledger_credit  # noqa: E402

HISTORY_BATCH = 2000


def slurm_options() -> dict[str, Any]:
    return {
        "url": SITE["SLURM_REST_URL"],
        "jwt_key_file": SITE["SLURM_JWT_KEY_FILE"],
        "shared_root": SITE["SLURM_SHARED_ROOT"],
        "partition": SITE.get("SLURM_PARTITION", ""),
        "gpu_types": [t for t in SITE.get("SLURM_GPU_TYPES", "").split(",") if t],
        "max_time_minutes": 1440,
    }


def cancel_bench_jobs() -> None:
    """scancel every job of this run (by its name) and wait until slurmctld has none running."""
    scancel = shutil.which("scancel") or "/usr/bin/scancel"
    squeue = shutil.which("squeue") or "/usr/bin/squeue"
    subprocess.run([scancel, "--name", NAME], check=False, capture_output=True)
    for _ in range(120):
        out = subprocess.run(
            [squeue, "-h", "--name", NAME, "-t", "PD,R,CG,CF", "-o", "%i"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if not out:
            return
        time.sleep(0.5)


# --- (a) raw slurmrestd --------------------------------------------------------------------


def bench_rest(n: int, workers: int) -> float:
    rest = SlurmRest(
        cluster="bench",
        url=SITE["SLURM_REST_URL"],
        jwt_key_file=SITE["SLURM_JWT_KEY_FILE"],
        pool_size=workers,
    )
    rest.token(USER)  # minted once, like any client would

    def submit(i: int) -> int:
        body = {
            "script": "#!/bin/bash\ntrue\n",
            "job": {
                "name": NAME,
                "partition": SITE.get("SLURM_PARTITION", "gpu"),
                "comment": f"bench-rest-{i}",
                "cpus_per_task": 1,
                "memory_per_node": 64,
                "time_limit": 1,
                "current_working_directory": WORKDIR,
                "standard_output": "/dev/null",
                "standard_error": "/dev/null",
                "environment": {"PATH": "/usr/bin:/bin"},
            },
        }
        answer = rest.call("POST", "/slurm/v0.0.38/job/submit", user=USER, json=body) or {}
        return int(answer["job_id"])

    return _submissions_per_second("slurmrestd", submit, n, workers, "the bench's client")


# --- (b) raw sbatch ---------------------------------------------------------------------------


def bench_sbatch(n: int, workers: int) -> float:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    sbatch = shutil.which("sbatch") or "/usr/bin/sbatch"

    def submit(i: int) -> int:
        argv = [
            runuser, "-u", USER, "--", sbatch, "--parsable", f"--job-name={NAME}",
            f"--partition={SITE.get('SLURM_PARTITION', 'gpu')}", f"--comment=bench-sbatch-{i}",
            "--cpus-per-task=1", "--mem=64", "--time=1", f"--chdir={WORKDIR}",
            "--output=/dev/null", "--error=/dev/null", "--wrap=true",
        ]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
        return int(out.stdout.strip().split(";")[0])

    return _submissions_per_second(
        "sbatch", submit, n, workers, "runuser+sbatch (with the bench's threads)", "munged"
    )


def _submissions_per_second(
    label: str,
    submit: Callable[[int], int],
    n: int,
    workers: int,
    client: str,
    daemon: str | None = None,
) -> float:
    """`submit` 0..n-1 (each returns its Slurm job id) from `workers` threads: the rate, and
    the CPU per job printed: this process as `client`, `daemon` (the one the method talks to;
    default the label), Slurm and the machine."""
    daemon = daemon or label
    usage = CpuSince()
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ids = list(pool.map(submit, range(n)))
    elapsed = time.perf_counter() - started
    used, named, machine = usage.per_job(n)
    assert len(set(ids)) == n
    groups = {client: named["bench"], f"{daemon}*": used.get(daemon, 0.0)}
    print(cpu_report(label, groups | _slurm_side(used), machine))
    return n / elapsed


# --- (c) the portal ---------------------------------------------------------------------------


def make_world(history: int) -> tuple[Cluster, str]:
    """A tenant whose user runs as the bench's cluster user, a priced Slurm cluster, a large
    grant, `history` finished jobs (add_history) and a write token."""
    user = User.objects.create(username="bench", email="bench@example.org")
    org = Organization.objects.create(name="Bench", slug="bench")
    project = Project.objects.create(organization=org, name="Bench", slug="bench")
    ProjectMember.objects.create(project=project, user=user, role=ProjectMember.Role.PI)
    cluster = Cluster.objects.create(name="slurm", kind=Cluster.Kind.SLURM, options=slurm_options())
    past = timezone.now() - timedelta(days=1)
    Rate.objects.create(
        cluster=cluster, resource="cpu_hour", su_per_unit=Decimal(1), effective_from=past
    )
    ClusterAccount.objects.create(
        user=user, cluster=cluster, username=USER, uid=pwd.getpwnam(USER).pw_uid
    )
    allocation = Allocation.objects.create(
        project=project, starts_at=past, ends_at=timezone.now() + timedelta(days=30)
    )
    allocation.clusters.set([cluster])
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(10**9), key="bench-grant")
    add_history(allocation, user=user, cluster=cluster, count=history)
    _, token = api_token_create(actor=user, name="bench")
    return cluster, token


def add_history(allocation: Allocation, *, user: User, cluster: Cluster, count: int) -> None:
    """`count` finished jobs of the tenant, each with one event and its hold charged at once
    (ledger_charge_direct_many: the settled hold, its hold and charge entries, the counters),
    as on a portal that has been in use; then ANALYZE, as autovacuum does after such a load.

    Without a history every table a submission writes starts empty, and PostgreSQL plans the
    foreign-key checks of each connection's first submissions (jobs -> holds, entries -> holds,
    events -> jobs) as scans of those nearly empty tables. It keeps those plans until the tables'
    statistics change, which, on a server with autovacuum off (these machines), never happens
    during a run: each submission then read every hold and job made so far, and each round
    was slower than the one before (in-process: 1.2 -> 1.9 ms of PostgreSQL CPU per POST
    over 2,000 POSTs)."""
    amount = Decimal("0.0167")  # 1 CPU for 1 minute at 1 SU per CPU-hour
    project, now = allocation.project, timezone.now()
    for start in range(0, count, HISTORY_BATCH):
        uuids = [uuid.uuid4() for _ in range(min(HISTORY_BATCH, count - start))]
        charges = ledger_charge_direct_many(
            actor=None,
            cluster=cluster,
            charges=[(project, amount, f"job:{u}", u, "history") for u in uuids],
        )
        ended = now - timedelta(seconds=count - start)
        jobs = Job.objects.bulk_create(
            Job(
                uuid=job_uuid,
                project=project,
                user=user,
                cluster=cluster,
                name="history",
                script="true\n",
                cpus=1,
                memory_mb=64,
                time_limit_minutes=1,
                state=Job.State.COMPLETED,
                backend_id=str(10_000_000 + start + i),
                cluster_username=USER,
                created_at=ended - timedelta(seconds=2),
                submitted_at=ended - timedelta(seconds=2),
                started_at=ended - timedelta(seconds=1),
                ended_at=ended,
                finalized_at=ended,
                exit_code=0,
                elapsed_seconds=1,
                estimated_cost=amount,
                charged_cost=charge.charged,
                hold=charge.holds[0],
            )
            for i, (job_uuid, charge) in enumerate(zip(uuids, charges, strict=True))
        )
        JobEvent.objects.bulk_create(
            JobEvent(
                job=job,
                from_state=Job.State.RUNNING,
                to_state=Job.State.COMPLETED,
                message="Completed",
                created_at=job.ended_at,
            )
            for job in jobs
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def start_celery_worker(concurrency: int) -> subprocess.Popen[bytes]:
    """A real worker on the bench database (threads pool: forwarding waits on HTTP)."""
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    celery = str(Path(sys.executable).with_name("celery"))
    log = open(f"/tmp/bench-submit-celery-{os.getpid()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [celery, "-A", "portal", "worker", "--pool=threads", f"--concurrency={concurrency}",
         "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "-Q", "celery"],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(4)  # let it connect to the broker before the clock starts
    return proc


def start_gunicorn(procs: int, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """The portal as production serves it: gunicorn with deploy/gunicorn.conf.py (gthread
    workers, access log on), `procs` workers of `threads` threads, on the bench database."""
    db = connection.settings_dict
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    env.update(
        DATABASE_URL=(
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(procs),
        GUNICORN_THREADS=str(threads),
    )
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    log = open(f"/tmp/bench-submit-gunicorn-{os.getpid()}.log", "wb")  # noqa: SIM115
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
    raise SystemExit("gunicorn did not answer /healthz within 30 s")


class HttpClients:
    """`threads` client threads, one kept-alive connection each, POSTing JSON to the portal."""

    def __init__(self, url: str, token: str, threads: int) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=threads)
        self.threads = threads
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",  # as behind the TLS proxy; SECURE_SSL_REDIRECT is on
        }

    def _post(self, request: tuple[str, dict[str, Any]]) -> None:
        path, body = request
        response = self.pool.request(
            "POST", path, body=json.dumps(body).encode(), headers=self.headers, retries=False
        )
        assert response.status in (200, 201), response.data[:500]

    def post_all(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        with ThreadPoolExecutor(self.threads) as executor:
            list(executor.map(self._post, requests))

    def warm_up(self, payload: dict[str, Any]) -> None:
        """Estimates (nothing held or created) until every gunicorn thread has served
        requests, as in a server that has been up for a while."""
        self.post_all([("/api/v1/jobs/estimate/", payload)] * (self.threads * 20))


def _requests(payload: dict[str, Any], count: int, batch: int) -> list[tuple[str, dict]]:
    """`count` jobs as single POSTs (batch 0) or as batch POSTs of up to `batch` jobs."""
    if not batch:
        return [("/api/v1/jobs/", payload)] * count
    head = {"project": payload["project"], "cluster": payload["cluster"]}
    job = {k: v for k, v in payload.items() if k not in head}
    sizes = [min(batch, count - start) for start in range(0, count, batch)]
    return [("/api/v1/jobs/batch/", {**head, "jobs": [job] * size}) for size in sizes]


def _post_jobs(
    token: str,
    payload: dict[str, Any],
    count: int,
    threads: int,
    batch: int,
    ready: Any,
    api_cpu: Any,
) -> None:
    """One API process (like one pre-forked gunicorn worker): warm up, wait at the `ready`
    barrier with the others (the clock starts there), then submit `count` jobs from `threads`
    threads, one POST each, or in batch POSTs of `batch` jobs; adds the CPU seconds it used
    after the barrier to `api_cpu`."""
    local = threading.local()
    clients = [Client(HTTP_AUTHORIZATION=f"Bearer {token}") for _ in range(threads)]

    def submit(request: tuple[str, dict[str, Any]]) -> None:
        if not hasattr(local, "client"):
            local.client = clients.pop()
        url, body = request
        response = local.client.post(url, body, content_type="application/json", secure=True)
        assert response.status_code == 201, response.content

    try:
        with ThreadPoolExecutor(threads) as pool:
            # Each thread opens its database connection and answers one rolled-back request
            # before the clock starts, as a long-lived worker's threads have (the barrier
            # makes every thread take one): otherwise the first requests after the fork pay
            # for copying the parent's memory pages and connecting.
            together = threading.Barrier(threads)

            def connect(_: int) -> None:
                warm_up(token, payload, batch)
                together.wait()

            list(pool.map(connect, range(threads)))
            ready.wait()  # warmed up: the parent reads the CPU counters
            ready.wait()  # go
            before = _process_cpu()
            list(pool.map(submit, _requests(payload, count, batch)))
            with api_cpu.get_lock():
                api_cpu.value += _process_cpu() - before
    finally:
        connections.close_all()


def _process_seconds(stat: Path) -> tuple[str, float]:
    """(command name, CPU seconds used so far) of the process of this /proc/<pid>/stat, its
    children that exited included (e.g. PostgreSQL backends count for the postmaster);
    ("", 0.0) when it is gone."""
    try:
        text = stat.read_text()
    except OSError:
        return "", 0.0
    fields = text[text.rindex(")") + 2 :].split()
    used = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return text[text.index("(") + 1 : text.rindex(")")], used / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by every process, summed by command name."""
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        comm, used = _process_seconds(stat)
        totals[comm] = totals.get(comm, 0.0) + used
    return totals


def machine_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, from /proc/stat (idle counts
    iowait too)."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, (idle + iowait) / tick


class CpuSince:
    """The CPU used from its making to `per_job`, per job: by command name (every process),
    by this bench process ("bench", with the children it has waited for) and the Celery
    worker ("worker", given its pid), and machine-wide, so that each method shows what its
    submissions cost the machine, not only what reaches Slurm."""

    def __init__(self, worker_pid: int | None = None) -> None:
        self.pids = {"bench": os.getpid(), **({"worker": worker_pid} if worker_pid else {})}
        self.commands = cpu_seconds()
        self.processes = self._processes()
        self.machine = machine_seconds()

    def _processes(self) -> dict[str, float]:
        return {
            name: _process_seconds(Path(f"/proc/{pid}/stat"))[1] for name, pid in self.pids.items()
        }

    def per_job(self, n: int) -> tuple[dict[str, float], dict[str, float], str]:
        """(ms by command name, ms by named process, "the machine ... busy, ... idle")."""
        commands, processes, machine = cpu_seconds(), self._processes(), machine_seconds()
        used = {k: (v - self.commands.get(k, 0.0)) * 1000 / n for k, v in commands.items()}
        named = {k: (v - self.processes[k]) * 1000 / n for k, v in processes.items()}
        busy, idle = (
            (after - before) * 1000 / n for before, after in zip(self.machine, machine, strict=True)
        )
        return used, named, f"the machine {busy:.1f} ms busy, {idle:.1f} ms idle per job"


def cpu_report(label: str, groups: dict[str, float], machine: str) -> str:
    return (
        f"      {label}: CPU per job: "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in groups.items())
        + f" (*machine-wide); {machine}"
    )


def _slurm_side(used: dict[str, float]) -> dict[str, float]:
    """What Slurm itself spent (slurmctld, and the accounting: slurmdbd and its MariaDB)."""
    return {
        "slurmctld*": used.get("slurmctld", 0.0),
        "slurmdbd+mariadbd*": used.get("slurmdbd", 0.0) + used.get("mariadbd", 0.0),
    }


def _process_cpu() -> float:
    """CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up(token: str, payload: dict[str, Any], batch: int = 0) -> None:
    """One submission in the parent, rolled back (no job, no hold, nothing queued), before the
    API processes are forked: like `gunicorn --preload` or any long-lived worker, they then
    start with the lazily imported views, serializers and URL patterns in place, instead of
    each paying ~250 ms of CPU for its first request in every round."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    url, body = _requests(payload, 1, batch)[0]
    with transaction.atomic():
        response = client.post(url, body, content_type="application/json", secure=True)
        assert response.status_code == 201, response.content
        transaction.set_rollback(True)


def _post_forked(
    n: int,
    workers: int,
    procs: int,
    token: str,
    payload: dict[str, Any],
    batch: int,
    worker_pid: int | None,
) -> tuple[float, float, Any, CpuSince]:
    """The test-client path: `procs` forked API processes (like gunicorn --preload workers,
    warmed up before the clock) share `workers` threads. Returns (clock start, seconds until
    the last answer, their CPU seconds, the CPU counters from the start: CpuSince)."""
    warm_up(token, payload, batch)
    connections.close_all()  # children open their own connections
    context = multiprocessing.get_context("fork")
    shares = [n // procs + (1 if p < n % procs else 0) for p in range(procs)]
    threads = max(1, workers // procs)
    # The API processes are forked and connected before the clock starts, like gunicorn's
    # pre-forked workers: the figure is requests answered, not process start-up.
    ready = context.Barrier(procs + 1)
    api_cpu = context.Value("d", 0.0)
    children = [
        context.Process(
            target=_post_jobs, args=(token, payload, share, threads, batch, ready, api_cpu)
        )
        for share in shares
    ]
    for child in children:
        child.start()
    ready.wait()  # every API process has warmed up
    usage = CpuSince(worker_pid)
    ready.wait()
    started = time.perf_counter()
    for child in children:
        child.join()
    api_done = time.perf_counter() - started
    if any(child.exitcode for child in children):
        raise SystemExit("an API process failed")
    return started, api_done, api_cpu, usage


def _payload(cluster: Cluster) -> dict[str, Any]:
    return {
        "project": "bench",
        "cluster": cluster.name,
        "name": NAME,
        "script": "true\n",
        "cpus": 1,
        "memory_mb": 64,
        "time_limit_minutes": 1,
    }


def warm_portal(url: str, token: str, cluster: Cluster, workers: int, batch: int) -> None:
    """Before the first round: a few real submissions, single and batched, forwarded to Slurm
    and cancelled. The API processes and the Celery worker then hold their connections (to
    PostgreSQL, the broker, slurmrestd) with their statements prepared, as in a portal that has
    been up a while; without it the first round ran about a fifth slower than the next two."""
    last_pk = Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    payload = _payload(cluster)
    requests = _requests(payload, workers * 10, 0) + _requests(payload, 2 * batch, batch)
    HttpClients(url, token, workers).post_all(requests)
    deadline = time.monotonic() + 120
    while Job.objects.filter(pk__gt=last_pk, backend_id="").exists():
        if time.monotonic() > deadline:
            raise SystemExit("the warm-up submissions did not reach Slurm within 120 s")
        time.sleep(0.1)


def bench_portal(
    n: int,
    workers: int,
    procs: int,
    cluster: Cluster,
    token: str,
    worker_pid: int | None,
    batch: int = 0,
    server: str = "",
) -> float:
    """`workers` client threads POST n jobs (one per POST, or `batch` per POST to jobs/batch/)
    over HTTP to the gunicorn at `server`, or (no server) through Django's test client in
    `procs` forked API processes; the clock stops when every job has its Slurm id."""
    payload = _payload(cluster)
    # This phase's jobs are the ones after the newest so far: the polls below read only them
    # (one range of the primary key), not the whole history.
    last_pk = Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    ours = Job.objects.filter(pk__gt=last_pk, cluster=cluster)
    api_cpu: Any
    if server:
        clients = HttpClients(server, token, workers)
        clients.warm_up(payload)
        usage = CpuSince(worker_pid)
        started = time.perf_counter()
        clients.post_all(_requests(payload, n, batch))
        api_done = time.perf_counter() - started
        api_cpu = None
    else:
        started, api_done, api_cpu, usage = _post_forked(
            n, workers, procs, token, payload, batch, worker_pid
        )
    deadline = time.monotonic() + 300
    while True:
        forwarded = ours.exclude(backend_id="").count()
        if forwarded >= n:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {forwarded} of {n} portal jobs reached Slurm in time")
        time.sleep(0.005)  # the clock stops within 5 ms of the last Slurm id
    elapsed = time.perf_counter() - started
    used, named, machine = usage.per_job(n)
    spread = ""
    if server:  # after the clock: the clients' kept-alive connections are still open
        landed = connection_spread(clients.pool.port, procs)
        spread = f"; connections per gunicorn worker [{landed}]"
    # One batch of the forwarder stamps all its jobs with the same submitted_at.
    stamps = ours.values_list("submitted_at", flat=True)
    batches = len(set(stamps))
    rejected = ours.filter(state=Job.State.REJECTED).count()
    assert rejected == 0, f"{rejected} portal jobs were rejected"
    groups = {
        "API processes": (
            api_cpu.value * 1000 / n if api_cpu is not None else used.get("gunicorn", 0.0)
        ),
        "Celery worker": named.get("worker", 0.0),
        "PostgreSQL*": used.get("postgres", 0.0),
        "Redis*": used.get("redis-server", 0.0),
        "slurmrestd*": used.get("slurmrestd", 0.0),
        **_slurm_side(used),
    }
    if server:  # forked API processes would count in this process
        groups["the bench's client"] = named["bench"]
    label = "portal batch" if batch else "portal"
    what = f"{n} jobs in batch POSTs of {batch}" if batch else f"{n} POSTs"
    print(
        f"      {label}: {procs} API processes answered all {what} in {api_done:.2f} s; "
        f"every job had its Slurm id at {elapsed:.2f} s ({batches} forwarding batches){spread}\n"
        + cpu_report(label, groups, machine)
    )
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="submissions per method and round")
    parser.add_argument("--workers", type=int, default=4, help="concurrent submitters")
    parser.add_argument("--forward", choices=["celery", "eager"], default="celery")
    parser.add_argument("--api-procs", type=int, default=2, help="API processes (gunicorn-like)")
    parser.add_argument("--celery-concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="a, b, c in turn; medians")
    parser.add_argument(
        "--history",
        type=int,
        default=20_000,
        help="finished jobs (with their charged holds) the tenant has before the run",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=50,
        help="also submit through POST /api/v1/jobs/batch/ in batches of N (0: single POSTs only)",
    )
    parser.add_argument(
        "--server",
        choices=["gunicorn", "client"],
        default="gunicorn",
        help="portal API over HTTP from gunicorn (deploy/gunicorn.conf.py), or in-process "
        "through Django's test client in forked processes (no HTTP)",
    )
    args = parser.parse_args()
    if args.forward == "eager" and args.server == "gunicorn":
        parser.error("--forward eager needs --server client (it forwards in the API process)")

    logging.getLogger("celery").setLevel(logging.WARNING)
    if args.forward == "eager":
        settings.CELERY_TASK_ALWAYS_EAGER = True
        from portal.celery import app

        app.conf.task_always_eager = True
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench_submit"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    worker = None
    server: subprocess.Popen[bytes] | None = None
    url = ""
    try:
        cluster, token = make_world(args.history)
        if args.forward == "celery":
            worker = start_celery_worker(args.celery_concurrency)
        threads = max(1, args.workers // args.api_procs)
        if args.server == "gunicorn":
            server, url = start_gunicorn(args.api_procs, threads)
        print(
            f"bench/submit.py: {args.jobs} jobs per method and round, {args.rounds} rounds, "
            f"{args.workers} concurrent submitters, as {USER}; portal: {args.api_procs} API "
            f"processes x {threads} threads ("
            + ("gunicorn over HTTP" if server else "test client, no HTTP")
            + f"), forwarding by {args.forward}; load average {os.getloadavg()[0]:.1f}"
            + (f"; batch POSTs of {args.batch}" if args.batch else "")
        )
        if url:
            warm_portal(url, token, cluster, args.workers, args.batch or 50)
        rates: dict[str, list[float]] = {"rest": [], "sbatch": [], "portal": [], "batch": []}
        for round_no in range(1, args.rounds + 1):
            cancel_bench_jobs()
            rates["rest"].append(bench_rest(args.jobs, args.workers))
            cancel_bench_jobs()
            rates["sbatch"].append(bench_sbatch(args.jobs, args.workers))
            cancel_bench_jobs()
            rates["portal"].append(
                bench_portal(
                    args.jobs,
                    args.workers,
                    args.api_procs,
                    cluster,
                    token,
                    worker.pid if worker is not None else None,
                    server=url,
                )
            )
            if args.batch:
                cancel_bench_jobs()
                rates["batch"].append(
                    bench_portal(
                        args.jobs,
                        args.workers,
                        args.api_procs,
                        cluster,
                        token,
                        worker.pid if worker is not None else None,
                        batch=args.batch,
                        server=url,
                    )
                )
            print(
                f"  round {round_no}: slurmrestd {rates['rest'][-1]:.1f}/s, "
                f"sbatch {rates['sbatch'][-1]:.1f}/s, portal {rates['portal'][-1]:.1f}/s"
                + (f", portal batch {rates['batch'][-1]:.1f}/s" if args.batch else "")
            )
        rest, sbatch, portal = (statistics.median(rates[k]) for k in ("rest", "sbatch", "portal"))
        print(f"  (a) raw slurmrestd : {rest:8.1f} submissions/s (median of {args.rounds})")
        print(f"  (b) raw sbatch     : {sbatch:8.1f} submissions/s")
        print(
            f"  (c) portal API     : {portal:8.1f} submissions/s (until every job has a Slurm id)"
        )
        print(f"  portal / slurmrestd = {portal / rest:.2f}  (goal >= 0.25)")
        print(f"  portal / sbatch     = {portal / sbatch:.2f}  (goal >= 1)")
        if args.batch:
            batched = statistics.median(rates["batch"])
            print(
                f"  (d) portal batch API: {batched:8.1f} submissions/s (POST /api/v1/jobs/batch/, "
                f"{args.batch} jobs per POST, until every job has a Slurm id)"
            )
            print(f"  portal batch / slurmrestd = {batched / rest:.2f}  (goal >= 0.5)")
            print(f"  portal batch / sbatch     = {batched / sbatch:.2f}  (goal >= 1)")
    finally:
        cancel_bench_jobs()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
