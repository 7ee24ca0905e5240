"""The lost-forward sweep: jobs left pending or submitting a minute with no live forwarder are
forwarded again, once, in one batch per cluster; a live forwarder keeps its claim."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

import pytest
from django.db import connection
from django.utils import timezone

from jobs.backends import get_backend
from jobs.backends.base import BackendUnavailable, JobSpec
from jobs.backends.simulated import SimulatedBackend
from jobs.models import Job, JobEvent
from jobs.services import (
    job_forward,
    job_spec,
    jobs_forward_batch,
    jobs_recover_lost_forwards,
    lost_forward_after,
)
from jobs.tasks import (
    FORWARD_QUICK_RETRIES,
    forward_cluster_task,
    forward_job_task,
    forward_pending_task,
)

pytestmark = pytest.mark.django_db


class CountingBackend(SimulatedBackend):
    """The simulated backend, counting submit and find calls by portal uuid (its own submit
    would hide a second submission of a uuid it knows: the count does not)."""

    submits: ClassVar[Counter[str]] = Counter()
    finds: ClassVar[list[int]] = []
    unavailable: ClassVar[bool] = False  # lookups fail
    down: ClassVar[bool] = False  # lookups and submissions fail
    delay: ClassVar[float] = 0.0

    def submit(self, spec: JobSpec) -> str:
        if CountingBackend.down:
            raise BackendUnavailable("cluster down")
        CountingBackend.submits[str(spec.uuid)] += 1
        time.sleep(CountingBackend.delay)
        return super().submit(spec)

    def find(self, uuids: Sequence[object]) -> dict:  # type: ignore[override]
        CountingBackend.finds.append(len(uuids))
        if CountingBackend.unavailable or CountingBackend.down:
            raise BackendUnavailable("cluster down")
        return super().find(uuids)  # type: ignore[arg-type]


@pytest.fixture
def counting(sim_cluster):
    sim_cluster.backend = "tests.jobs.test_forward_recovery.CountingBackend"
    sim_cluster.options = {**sim_cluster.options, "gpus": 1000}
    sim_cluster.save()
    CountingBackend.submits = Counter()
    CountingBackend.finds = []
    CountingBackend.unavailable = False
    CountingBackend.down = False
    CountingBackend.delay = 0.0
    backend = get_backend(sim_cluster)
    assert isinstance(backend, CountingBackend)
    yield backend
    CountingBackend.delay = 0.0


def _age(job: Job, seconds: float, state: str | None = None) -> None:
    fields: dict[str, object] = {"updated_at": timezone.now() - timedelta(seconds=seconds)}
    if state:
        fields["state"] = state
    Job.objects.filter(pk=job.pk).update(**fields)


def test_the_sweep_forwards_jobs_left_a_minute_once_and_leaves_live_ones_alone(
    submit, sim_cluster, counting
):
    lost_pending = submit(sim_cluster, name="lost-pending")
    # A forwarder died after the cluster took this one, before it recorded the answer ...
    died_after = submit(sim_cluster, name="died-after-submit")
    counting.submit(job_spec(died_after))
    # ... and before it submitted this one.
    died_before = submit(sim_cluster, name="died-before-submit")
    fresh_pending = submit(sim_cluster, name="fresh-pending")
    live_submitting = submit(sim_cluster, name="live-submitting")
    _age(lost_pending, 61)
    _age(died_after, 61, Job.State.SUBMITTING)
    _age(died_before, 61, Job.State.SUBMITTING)
    _age(fresh_pending, 30)
    _age(live_submitting, 30, Job.State.SUBMITTING)

    assert jobs_recover_lost_forwards() == [sim_cluster.pk]
    claimed = jobs_forward_batch(
        cluster_id=sim_cluster.pk, lost_before=timezone.now() - lost_forward_after()
    )

    assert claimed == 3
    for job in (lost_pending, died_after, died_before, fresh_pending, live_submitting):
        job.refresh_from_db()
    assert [lost_pending.state, died_after.state, died_before.state] == [Job.State.QUEUED] * 3
    assert fresh_pending.state == Job.State.PENDING
    assert live_submitting.state == Job.State.SUBMITTING
    assert (died_after.forward_attempts, died_before.forward_attempts) == (1, 1)
    # Every job reached the cluster exactly once: the one the dead forwarder had submitted
    # was found by its uuid (one lookup for the batch's retried jobs), not submitted again.
    assert CountingBackend.submits == {
        str(lost_pending.uuid): 1,
        str(died_after.uuid): 1,
        str(died_before.uuid): 1,
    }
    assert CountingBackend.finds == [2]
    assert JobEvent.objects.get(job=died_after, to_state=Job.State.QUEUED).message == (
        f"Found on the cluster as {died_after.backend_id}"
    )
    # Idempotent: a second sweep finds nothing more to do.
    assert jobs_recover_lost_forwards() == []
    assert forward_cluster_task.apply(args=(sim_cluster.pk, False, True)).get() == 0


def test_the_beat_task_queues_one_recovery_forward_per_cluster_not_one_per_job(
    submit, sim_cluster, counting, monkeypatch
):
    jobs = [submit(sim_cluster, name=f"lost-{i}") for i in range(5)]
    for job in jobs:
        _age(job, 120)
    queued: list[tuple[object, ...]] = []
    monkeypatch.setattr(
        forward_cluster_task, "delay", lambda *args, **kw: queued.append((*args, kw))
    )

    assert forward_pending_task() == 1

    assert queued == [(sim_cluster.pk, {"coalesce": False, "recover": True})]


def test_a_recovered_job_the_cluster_cannot_be_asked_about_is_not_submitted_blind(
    submit, sim_cluster, counting
):
    job = submit(sim_cluster, name="unsure")
    _age(job, 61, Job.State.SUBMITTING)
    CountingBackend.unavailable = True

    assert jobs_recover_lost_forwards() == [sim_cluster.pk]
    jobs_forward_batch(cluster_id=sim_cluster.pk, lost_before=timezone.now())

    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert job.forward_attempts == 2
    assert "cluster down" in job.state_reason
    assert CountingBackend.submits == {}


@pytest.mark.django_db(transaction=True)
def test_a_live_forwarder_slower_than_the_lost_delay_renews_its_claim_and_is_not_swept(
    submit, sim_cluster, counting, settings
):
    settings.JOBS_LOST_FORWARD_SECONDS = 4  # renewed every second
    job = submit(sim_cluster, name="slow")
    CountingBackend.delay = 6.0

    def forward() -> None:
        try:
            job_forward(job_id=job.pk)
        finally:
            connection.close()

    forwarder = threading.Thread(target=forward)
    forwarder.start()
    try:
        time.sleep(5.0)  # longer than the lost delay, in the middle of the submit
        assert jobs_recover_lost_forwards() == []
        job.refresh_from_db()
        assert job.state == Job.State.SUBMITTING
        assert timezone.now() - job.updated_at < timedelta(seconds=2)
    finally:
        forwarder.join()
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert CountingBackend.submits == {str(job.uuid): 1}


def test_a_job_its_cluster_keeps_refusing_is_retried_a_few_times_then_by_the_sweep_in_a_batch(
    submit, sim_cluster, counting
):
    job = submit(sim_cluster, name="outage")
    CountingBackend.down = True

    forward_job_task.apply(args=(job.pk,))  # eager: the quick retries run inline, then stop

    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert job.forward_attempts == FORWARD_QUICK_RETRIES + 1
    assert "cluster down" in job.state_reason
    assert CountingBackend.finds == [1] * FORWARD_QUICK_RETRIES  # never submitted blind
    # The cluster is back: the sweep takes the job over once it has waited the lost delay.
    CountingBackend.down = False
    assert jobs_recover_lost_forwards() == []
    _age(job, 46)
    assert jobs_recover_lost_forwards() == [sim_cluster.pk]
    assert forward_cluster_task.apply(args=(sim_cluster.pk, False, True)).get() == 1
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert CountingBackend.submits == {str(job.uuid): 1}


def test_a_recovery_batch_the_cluster_refuses_waits_for_the_next_sweep_without_per_job_tasks(
    submit, sim_cluster, counting, monkeypatch
):
    jobs = [submit(sim_cluster, name=f"lost-{i}") for i in range(3)]
    for job in jobs:
        _age(job, 120)
    CountingBackend.down = True
    queued: list[object] = []
    monkeypatch.setattr(forward_job_task, "apply_async", lambda *a, **kw: queued.append(a))

    assert jobs_forward_batch(cluster_id=sim_cluster.pk, lost_before=timezone.now()) == 3

    assert queued == []
    assert set(Job.objects.values_list("state", "forward_attempts")) == {(Job.State.PENDING, 1)}
    assert jobs_recover_lost_forwards() == []  # touched now: the next sweep after the delay
