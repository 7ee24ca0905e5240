"""Forwarding and sync: one poll per cluster, retries without duplicates, finalise once."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection

from jobs.backends import get_backend
from jobs.backends.base import BackendUnavailable
from jobs.backends.simulated import SimulatedBackend
from jobs.models import Job, JobEvent
from jobs.services import cluster_sync, job_forward
from quotas.models import Hold, LedgerEntry
from quotas.reconcile import reconcile_ledger
from tests.concurrency import at_once


class CountingBackend(SimulatedBackend):
    """The real simulated backend, counting how often each method is called."""

    calls: Counter[str] = Counter()

    def poll(self, refs):
        self.calls["poll"] += 1
        return super().poll(refs)

    def usage(self, refs):
        self.calls["usage"] += 1
        return super().usage(refs)

    def find(self, uuids):
        self.calls["find"] += 1
        return super().find(uuids)

    def submit(self, spec):
        backend_id = super().submit(spec)
        self.calls["submit"] += 1  # successful submissions only
        return backend_id


@pytest.fixture
def counting(sim_cluster):
    sim_cluster.backend = "tests.jobs.test_sync.CountingBackend"
    sim_cluster.options = {**sim_cluster.options, "gpus": 1000}
    sim_cluster.save()
    CountingBackend.calls = Counter()
    backend = get_backend(sim_cluster)
    assert isinstance(backend, CountingBackend)
    return backend


@pytest.mark.parametrize("count", [3, 60])
def test_sync_makes_one_poll_and_one_usage_call_whatever_the_number_of_jobs(
    submit, sim_cluster, counting, count
):
    jobs = [
        submit(sim_cluster, name=f"j{i}", env={"SIM_DURATION_SECONDS": "60"}) for i in range(count)
    ]
    for job in jobs:
        job_forward(job_id=job.pk)
    counting.calls.clear()

    first = cluster_sync(cluster=sim_cluster)
    assert counting.calls == Counter({"poll": 1})
    assert first.transitions == count
    counting.advance(60)
    second = cluster_sync(cluster=sim_cluster)

    assert counting.calls == Counter({"poll": 2, "usage": 1})
    assert (second.backend_calls, second.finalized) == (2, count)
    assert Job.objects.filter(state=Job.State.COMPLETED, finalized_at__isnull=False).count() == (
        count
    )


def test_a_cluster_down_at_submit_keeps_the_job_pending_then_submits_it_exactly_once(
    submit, sim_cluster, counting
):
    job = submit(sim_cluster)
    counting.set_available(False)
    with pytest.raises(BackendUnavailable):
        job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.forward_attempts, job.backend_id) == (Job.State.PENDING, 1, "")

    counting.set_available(True)
    job_forward(job_id=job.pk)
    job_forward(job_id=job.pk)  # a duplicate delivery of the task

    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert counting.calls["submit"] == 1
    assert counting.find([job.uuid]) == {job.uuid: job.backend_id}
    assert len(counting.state.jobs) == 1


def test_forwarding_finds_a_job_the_cluster_already_has_instead_of_submitting_again(
    submit, sim_cluster, counting
):
    from jobs.services import job_spec

    job = submit(sim_cluster)
    # An earlier attempt submitted, but its answer was lost (a timeout after the cluster
    # accepted): the job went back to pending with one attempt counted.
    existing = counting.submit(job_spec(job))
    Job.objects.filter(pk=job.pk).update(forward_attempts=1)
    counting.calls.clear()
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.backend_id == existing
    assert counting.calls["submit"] == 0
    assert "Found on the cluster" in job.events.last().message


def test_a_job_the_cluster_rejects_is_rejected_and_its_hold_released(
    submit, sim_cluster, counting, allocation
):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "soon"})
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    allocation.refresh_from_db()
    assert job.state == Job.State.REJECTED
    assert "SIM_DURATION_SECONDS" in job.state_reason
    assert job.finalized_at is not None
    assert (allocation.held, allocation.charged) == (0, 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_syncs_racing_finalise_every_job_exactly_once(request):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    sim_cluster = request.getfixturevalue("sim_cluster")
    submit = request.getfixturevalue("submit")
    backend = get_backend(sim_cluster)
    jobs = [
        submit(sim_cluster, name=f"r{i}", gpus=0, env={"SIM_DURATION_SECONDS": "100"})
        for i in range(40)
    ]
    for job in jobs:
        job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    backend.advance(100)

    at_once(lambda: cluster_sync(cluster=sim_cluster))

    assert Job.objects.filter(state="completed", finalized_at__isnull=False).count() == 40
    charges = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE)
    assert charges.count() == 40
    assert set(charges.values_list("amount", flat=True)) == {Decimal("0.0031")}
    assert not Hold.objects.filter(state=Hold.State.OPEN).exists()
    completed_events = JobEvent.objects.filter(from_state="running", to_state="completed")
    assert completed_events.count() == 40


class AccountingLagBackend(SimulatedBackend):
    """The simulated backend whose usage() is unavailable until a barrier is set, then makes
    every caller wait at it: two syncs that have both read the same finished jobs."""

    barrier: threading.Barrier | None = None

    def usage(self, refs):
        if self.barrier is None:
            raise BackendUnavailable("accounting is catching up")
        self.barrier.wait(timeout=30)
        return super().usage(refs)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_syncs_that_read_the_same_finished_jobs_finalise_each_exactly_once(request):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    sim_cluster = request.getfixturevalue("sim_cluster")
    submit = request.getfixturevalue("submit")
    allocation = request.getfixturevalue("allocation")
    sim_cluster.backend = "tests.jobs.test_sync.AccountingLagBackend"
    sim_cluster.save()
    AccountingLagBackend.barrier = None
    backend = get_backend(sim_cluster)
    jobs = [
        submit(sim_cluster, name=f"f{i}", gpus=0, env={"SIM_DURATION_SECONDS": "100"})
        for i in range(30)
    ]
    for job in jobs:
        job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    backend.advance(100)
    ended = cluster_sync(cluster=sim_cluster)  # records the ends; usage unavailable
    assert (ended.transitions, ended.finalized) == (30, 0)

    AccountingLagBackend.barrier = threading.Barrier(2)
    try:
        finalized = at_once(lambda: cluster_sync(cluster=sim_cluster).finalized)
    finally:
        AccountingLagBackend.barrier = None

    assert len(finalized) == 2  # both read the finished jobs and asked for their usage
    assert sum(finalized) == 30
    assert Job.objects.filter(state="completed", finalized_at__isnull=False).count() == 30
    charges = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE)
    assert charges.count() == 30
    assert charges.values("hold").distinct().count() == 30
    assert JobEvent.objects.filter(from_state="completed", to_state="completed").count() == 30
    assert not Hold.objects.filter(state=Hold.State.OPEN).exists()
    allocation.refresh_from_db()
    assert allocation.held == 0
    assert allocation.charged == sum(charges.values_list("amount", flat=True), Decimal(0))
    assert reconcile_ledger().ok
