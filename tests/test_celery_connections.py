"""A real Celery worker keeps its database connection between tasks for DB_CONN_MAX_AGE, as the
web processes do between requests (portal.celery.keep_usable_connections), instead of Celery's
default of a new PostgreSQL backend for every task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from jobs.tasks import sync_all_clusters_task
from portal.celery import app as celery_app
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """One worker process (threads pool, one thread) on the test database, its connections
    named `name` in pg_stat_activity."""

    def __init__(self, folder: Path, *, max_age: int) -> None:
        self.name = f"gpuc-test-worker-{uuid.uuid4().hex[:8]}"
        self.log = folder / "worker.log"
        env = {
            **os.environ,
            "DATABASE_URL": f"{database_url()}?application_name={self.name}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "DB_CONN_MAX_AGE": str(max_age),
            "PYTHONPATH": str(ROOT),
        }
        argv = [
            sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "threads",
            "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (fixed argv)
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_for(lambda text: " ready." in text)

    def _wait_for(self, done: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + 60
        while not done(self.log.read_text()):
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.1)

    def run_tasks(self, count: int) -> None:
        """Queue `count` tasks that read the database; wait until the worker has run them."""
        done = self.log.read_text().count(" succeeded in ")
        for _ in range(count):
            sync_all_clusters_task.delay()
        self._wait_for(lambda text: text.count(" succeeded in ") >= done + count)

    def backends(self) -> list[tuple[int, datetime, datetime, str]]:
        """(pid, when it connected, when it last ran a statement, that statement) of each
        PostgreSQL backend open for the worker now."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_start, state_change, query FROM pg_stat_activity"
                " WHERE application_name = %s",
                [self.name],
            )
            return cursor.fetchall()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def worker_of(tmp_path: Path) -> Iterator[Callable[[int], Worker]]:
    started: list[Worker] = []
    celery_app.control.purge()

    def start(max_age: int) -> Worker:
        worker = Worker(tmp_path, max_age=max_age)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    celery_app.control.purge()


def _now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_a_worker_keeps_its_connection_between_tasks_for_db_conn_max_age(worker_of):
    worker = worker_of(60)
    worker.run_tasks(3)

    before = _now()
    worker.run_tasks(3)

    backends = worker.backends()
    # The tasks' statement (the enabled clusters) last ran on a backend opened before them.
    assert any(
        opened < before < last and "quotas_cluster" in query for _, opened, last, query in backends
    ), backends


def test_with_no_max_age_a_worker_closes_its_connection_after_each_task(worker_of):
    worker = worker_of(0)

    worker.run_tasks(3)

    # Closed after the task, just after the worker logged its success: looked for a while.
    deadline = time.monotonic() + 10
    while tasks_backends := [b for b in worker.backends() if "quotas_cluster" in b[3]]:
        assert time.monotonic() < deadline, tasks_backends
        time.sleep(0.1)
