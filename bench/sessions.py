#!/usr/bin/env python
"""Interactive sessions on the real Slurm of deploy/slurm, through the real proxy:

  (a) start-to-answer: POST /api/v1/sessions/ (JupyterLab) to the first 200 of
      /sessions/<uuid>/api/status through nginx, `--starts` times (median). Forwarding and the
      cluster sync run in this process in a tight loop (production's beat syncs every
      JOBS_SYNC_INTERVAL_SECONDS, 5 s, which adds up to that much);
  (b) proxied request latency versus direct to the app: GET api/status `--requests` times
      each, interleaved, through nginx (auth_request to the portal on every request) and
      straight to JupyterLab with its token; p50 and p95 of each and the difference.

The portal runs under gunicorn (deploy/gunicorn.conf.py) on a throw-away database next to
DATABASE_URL's (<name>_bench_sessions); nginx runs deploy/sessions/nginx.conf.in. Goal: the
proxy adds under 5 ms at p50. Every session is cancelled at the end.

    python bench/sessions.py [--starts 5] [--requests 500]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SESSIONS_PROXY_SECRET", secrets.token_hex(16))
# nginx here listens on plain HTTP (production puts TLS in front): no redirect to https.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")

from bench import submit as base  # noqa: E402 (sets Django up for the bench)

make_world, start_gunicorn = base.make_world, base.start_gunicorn

import requests  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from accounts.models import User  # noqa: E402
from jobs.models import Job, Session  # noqa: E402
from jobs.services import cluster_sync, job_cancel, job_forward  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(portal_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    prefix = Path(tempfile.mkdtemp(prefix="gpuc-bench-nginx-"))
    prefix.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = (
        (ROOT / "deploy/sessions/nginx.conf.in")
        .read_text()
        .replace("@PREFIX@", str(prefix))
        .replace("@LISTEN@", f"127.0.0.1:{port}")
        .replace("@PORTAL@", portal_url.removeprefix("http://"))
        .replace("@PROXY_SECRET@", os.environ["SESSIONS_PROXY_SECRET"])
    )
    (prefix / "nginx.conf").write_text(text)
    proc = subprocess.Popen(
        [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url, prefix
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"nginx did not start (see {prefix}/error.log)")


def start_session(api: requests.Session, portal: str, cluster_name: str) -> Job:
    answer = api.post(
        f"{portal}/api/v1/sessions/",
        json={
            "app": "jupyterlab",
            "project": "bench",
            "cluster": cluster_name,
            "cpus": 1,
            "memory_mb": 1024,
            "time_limit_minutes": 30,
        },
        timeout=30,
    )
    answer.raise_for_status()
    return Job.objects.get(uuid=answer.json()["id"])


def wait_answering(job: Job, browser: requests.Session, proxy: str, timeout: float = 180) -> None:
    job_forward(job_id=job.pk)
    url = f"{proxy}/sessions/{job.uuid}/api/status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster_sync(cluster=job.cluster)
        job.refresh_from_db()
        if job.is_final:
            raise SystemExit(f"session {job.uuid} ended: {job.state} {job.state_reason}")
        if job.state == Job.State.RUNNING:
            try:
                if browser.get(url, allow_redirects=False, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
        time.sleep(0.2)
    raise SystemExit(f"session {job.uuid} did not answer within {timeout} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench_sessions"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    jobs: list[Job] = []
    server = nginx = None
    prefix: Path | None = None
    try:
        cluster, token = make_world()
        user = User.objects.get(username="bench")
        server, portal = start_gunicorn(1, 4)
        nginx, proxy, prefix = start_nginx(portal)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        client = Client()
        client.force_login(user)
        browser = requests.Session()
        browser.cookies.set("sessionid", client.cookies["sessionid"].value)

        starts = []
        for i in range(args.starts):
            t0 = time.perf_counter()
            job = start_session(api, portal, cluster.name)
            jobs.append(job)
            wait_answering(job, browser, proxy)
            starts.append(time.perf_counter() - t0)
            print(f"start {i + 1}: {starts[-1]:.2f} s", flush=True)
            if i < args.starts - 1:
                job_cancel(user=user, job=job)

        job = jobs[-1]
        session = Session.objects.get(job=job)
        path = f"/sessions/{job.uuid}/api/status"
        direct = requests.Session()
        direct.headers["Authorization"] = f"token {session.token}"
        proxied_ms, direct_ms = [], []
        for _ in range(20):  # warm both paths (connections, the portal's caches)
            browser.get(f"{proxy}{path}", timeout=10)
            direct.get(f"http://{session.upstream}{path}", timeout=10)
        for _ in range(args.requests):
            t0 = time.perf_counter()
            assert browser.get(f"{proxy}{path}", timeout=10).status_code == 200
            proxied_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            assert direct.get(f"http://{session.upstream}{path}", timeout=10).status_code == 200
            direct_ms.append((time.perf_counter() - t0) * 1000)

        print()
        print(
            f"start to answering through the proxy (median of {len(starts)}): "
            f"{statistics.median(starts):.2f} s  (all: {', '.join(f'{s:.1f}' for s in starts)})"
        )
        for name, values in (("proxied", proxied_ms), ("direct", direct_ms)):
            print(
                f"{name:8} p50 {percentile(values, 0.5):7.2f} ms   p95 "
                f"{percentile(values, 0.95):7.2f} ms   ({len(values)} requests)"
            )
        added = percentile(proxied_ms, 0.5) - percentile(direct_ms, 0.5)
        print(f"the proxy adds {added:.2f} ms at p50 (goal: under 5 ms)")
    finally:
        for job in jobs:
            job.refresh_from_db()
            if not job.is_final:
                try:
                    job_cancel(user=job.user, job=job)
                except Exception as exc:  # cleanup goes on
                    print(f"could not cancel {job.uuid}: {exc}", file=sys.stderr)
        for proc in (nginx, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
        if prefix is not None:
            shutil.rmtree(prefix, ignore_errors=True)
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
