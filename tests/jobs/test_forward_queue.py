"""Queuing the forwarding of single submissions (jobs/queue.py, on the suite's real Redis
cache): submissions close together share one task, counted on the cluster's key, and the
task waits for more only while they keep coming (jobs.tasks._coalesce, on a virtual clock).
"""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings

from jobs import queue, tasks
from portal.cache import redis_key

needs_redis = pytest.mark.skipif(
    "redis" not in settings.CACHES["default"]["BACKEND"].lower(),
    reason="counting submissions needs the Redis cache (CACHE_URL)",
)


@pytest.fixture
def cluster_id() -> int:
    """An id no other test (or process sharing the Redis database) uses for its key."""
    return 10**9 + secrets.randbelow(10**9)


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The forwarding tasks queued (recorded instead of sent to the broker)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        tasks.forward_cluster_task, "delay", lambda *args, **kw: calls.append((*args, kw))
    )
    return calls


class Clock:
    """time.monotonic and time.sleep for jobs.tasks: sleeping moves the clock and runs
    `during_sleep` (submissions that arrive meanwhile)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.during_sleep = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.during_sleep()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tasks, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


@needs_redis
def test_submissions_close_together_queue_one_task_and_are_counted(cluster_id, queued):
    for _ in range(3):
        queue.forward_cluster(cluster_id)

    assert queued == [(cluster_id, {"coalesce": True})]
    assert queue.forward_submissions(cluster_id=cluster_id) == 3
    key = queue.FORWARD_DEBOUNCE_KEY.format(cluster_id=cluster_id)
    # A task that is lost blocks new ones only until the key expires.
    counter = redis_key(key)
    assert counter is not None
    ttl = counter.client.ttl(counter.name)
    assert 0 < ttl <= queue.FORWARD_DEBOUNCE_SECONDS

    queue.forward_debounce_clear(cluster_id=cluster_id)  # the task starts its claim
    assert queue.forward_submissions(cluster_id=cluster_id) is None
    queue.forward_cluster(cluster_id)

    assert len(queued) == 2
    assert queue.forward_submissions(cluster_id=cluster_id) == 1


@needs_redis
def test_a_lone_submission_is_forwarded_after_one_quiet_interval(cluster_id, queued, clock):
    queue.forward_cluster(cluster_id)

    tasks._coalesce(cluster_id)

    assert clock.slept == [tasks.FORWARD_QUIET_SECONDS]


@needs_redis
def test_the_task_waits_while_submissions_keep_coming_but_not_longer_than_its_limit(
    cluster_id, queued, clock
):
    queue.forward_cluster(cluster_id)
    clock.during_sleep = lambda: queue.forward_cluster(cluster_id)

    tasks._coalesce(cluster_id)

    assert sum(clock.slept) == pytest.approx(tasks.FORWARD_COALESCE_SECONDS)
    assert len(clock.slept) == round(tasks.FORWARD_COALESCE_SECONDS / tasks.FORWARD_QUIET_SECONDS)
    assert len(queued) == 1  # everything that came meanwhile joined the waiting task


@needs_redis
def test_a_stream_that_pauses_is_forwarded_at_the_pause(cluster_id, queued, clock):
    queue.forward_cluster(cluster_id)
    arrivals = iter([True, True, False, True])  # a submission in each interval but the third
    clock.during_sleep = lambda: next(arrivals) and queue.forward_cluster(cluster_id)

    tasks._coalesce(cluster_id)

    assert clock.slept == [tasks.FORWARD_QUIET_SECONDS] * 3


def test_without_a_count_the_task_waits_its_whole_moment(cluster_id, clock):
    # No key: the task was queued by another path, or the key expired before it started.
    tasks._coalesce(cluster_id)

    assert clock.slept == [tasks.FORWARD_COALESCE_SECONDS]


def test_on_a_cache_without_redis_the_first_submission_still_queues_alone_uncounted(
    cluster_id, settings, tmp_path
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }

    assert queue._count_submission(cluster_id) is True
    assert queue._count_submission(cluster_id) is False
    assert queue.forward_submissions(cluster_id=cluster_id) is None  # the task waits it all
