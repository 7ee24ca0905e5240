"""Jobs the cluster stops reporting: marked missing, ended after a grace period, charged once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import pytest
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.backends import get_backend
from jobs.backends.base import UNKNOWN, BackendUnavailable, JobRef, JobStatus
from jobs.backends.simulated import SimulatedBackend
from jobs.models import Job, JobEvent
from jobs.services import cluster_sync, job_forward
from quotas.models import Hold, LedgerEntry, Rate
from quotas.reconcile import reconcile_ledger
from tests import factories
from tests.concurrency import at_once

GRACE = 600
# What the conftest's simulated cluster charges per hour for the submit fixture's job:
# 1 h100 GPU x 2 + 1 CPU x 0.1 + 1 GB x 0.01 SU per hour, held for its 60-minute limit.
SU_PER_HOUR = Decimal("2.11")


class ForgetfulBackend(SimulatedBackend):
    """The simulated backend, whose poll leaves out the backend ids in `hidden` (as a cluster
    that purged a job or had it deleted by hand) after running `during_poll` (a concurrent
    writer acting between the sync's read and its writes)."""

    hidden: ClassVar[set[str]] = set()
    unsure: ClassVar[set[str]] = set()  # reported UNKNOWN (e.g. Slurm accounting down)
    during_poll: ClassVar[Callable[[], None] | None] = None

    def poll(self, refs: Sequence[JobRef]) -> dict[str, JobStatus]:
        if (hook := ForgetfulBackend.during_poll) is not None:
            hook()
        found = {k: v for k, v in super().poll(refs).items() if k not in ForgetfulBackend.hidden}
        for backend_id in ForgetfulBackend.unsure:
            found[backend_id] = JobStatus(backend_id, UNKNOWN, reason="accounting down")
        return found


@pytest.fixture
def forgetful(sim_cluster, settings):
    settings.JOBS_MISSING_GRACE_SECONDS = GRACE
    sim_cluster.backend = "tests.jobs.test_lost_jobs.ForgetfulBackend"
    sim_cluster.options = {**sim_cluster.options, "gpus": 1000}
    sim_cluster.save()
    ForgetfulBackend.hidden = set()
    ForgetfulBackend.unsure = set()
    ForgetfulBackend.during_poll = None
    backend = get_backend(sim_cluster)
    assert isinstance(backend, ForgetfulBackend)
    yield backend
    ForgetfulBackend.hidden = set()
    ForgetfulBackend.unsure = set()
    ForgetfulBackend.during_poll = None


def _running(submit, cluster, count: int = 1) -> list[Job]:
    """`count` jobs forwarded and seen running by a sync (the manual clock keeps them so)."""
    jobs = [submit(cluster, name=f"j{i}") for i in range(count)]
    for job in jobs:
        job_forward(job_id=job.pk)
    cluster_sync(cluster=cluster)
    for job in jobs:
        job.refresh_from_db()
        assert job.state == Job.State.RUNNING
    return jobs


def _lose(backend: ForgetfulBackend, cluster, jobs: Sequence[Job]) -> None:
    """The cluster stops reporting the jobs; one sync notes it."""
    ForgetfulBackend.hidden.update(job.backend_id for job in jobs)
    cluster_sync(cluster=cluster)


def test_a_running_job_the_cluster_loses_is_failed_after_the_grace_and_charged_what_it_ran(
    submit, sim_cluster, forgetful, allocation
):
    (job,) = _running(submit, sim_cluster)
    ForgetfulBackend.hidden.add(job.backend_id)

    first = cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    noticed = job.missing_since
    assert (first.missing, first.lost, first.transitions) == (1, 0, 0)
    assert job.state == Job.State.RUNNING
    assert noticed is not None
    assert job.finalized_at is None

    second = cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert (second.missing, second.lost) == (1, 0)
    assert (job.state, job.missing_since) == (Job.State.RUNNING, noticed)

    # The portal saw it run for 30 minutes before the cluster lost it, longer ago than the
    # grace period; a rate raised after it started does not apply to it.
    lost_at = timezone.now() - timedelta(seconds=GRACE + 1)
    started_at = lost_at - timedelta(minutes=30)
    Job.objects.filter(pk=job.pk).update(started_at=started_at, missing_since=lost_at)
    factories.RateFactory(
        cluster=sim_cluster,
        resource=Rate.Resource.GPU_HOUR,
        gpu_type="h100",
        su_per_unit=Decimal("100"),
        effective_from=started_at + timedelta(minutes=1),
    )

    third = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    hold = Hold.objects.get(pk=job.hold_id)
    allocation.refresh_from_db()
    assert (third.missing, third.lost, third.finalized) == (1, 1, 0)
    assert job.state == Job.State.FAILED
    assert job.state_reason == (
        f"The cluster no longer reports this job (missing since {lost_at:%Y-%m-%d %H:%M:%S} UTC)"
    )
    assert (job.ended_at, job.elapsed_seconds, job.exit_code) == (lost_at, 1800, None)
    assert job.finalized_at is not None
    assert job.charged_cost == Decimal("1.0550")  # 0.5 h x 2.11 SU/h
    assert job.usage["source"] == "job record"
    assert (hold.state, hold.amount, hold.charged, hold.released) == (
        Hold.State.SETTLED,
        SU_PER_HOUR,
        Decimal("1.0550"),
        Decimal("1.0550"),
    )
    assert (allocation.held, allocation.charged) == (0, Decimal("1.0550"))
    assert reconcile_ledger().ok
    assert list(job.events.values_list("from_state", "to_state", "message"))[-2:] == [
        (Job.State.RUNNING, Job.State.FAILED, job.state_reason),
        (Job.State.FAILED, Job.State.FAILED, "Charged 1.0550 SU for 1800 s; released 1.0550"),
    ]

    entries, events, updated_at = (
        LedgerEntry.objects.count(),
        JobEvent.objects.count(),
        job.updated_at,
    )
    again = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    assert (again.polled, again.missing, again.lost, again.finalized) == (0, 0, 0, 0)
    assert (LedgerEntry.objects.count(), JobEvent.objects.count()) == (entries, events)
    assert (job.state, job.charged_cost, job.updated_at) == (
        Job.State.FAILED,
        Decimal("1.0550"),
        updated_at,
    )


def test_a_job_reported_again_within_the_grace_period_is_no_longer_missing_and_carries_on(
    submit, sim_cluster, forgetful, allocation
):
    (job,) = _running(submit, sim_cluster)
    _lose(forgetful, sim_cluster, [job])
    Job.objects.filter(pk=job.pk).update(
        missing_since=timezone.now() - timedelta(seconds=GRACE - 60)
    )
    ForgetfulBackend.hidden.clear()

    back = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    assert (back.missing, back.lost) == (0, 0)
    assert (job.state, job.missing_since) == (Job.State.RUNNING, None)

    forgetful.advance(60)  # it finishes after its 60 simulated seconds
    done = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    assert (done.transitions, done.finalized, done.lost) == (1, 1, 0)
    assert (job.state, job.state_reason, job.missing_since) == (Job.State.COMPLETED, "", None)
    assert job.charged_cost == Decimal("0.0352")  # 60 s x 2.11 SU/h
    assert reconcile_ledger().ok


def test_a_job_seen_again_then_lost_again_gets_a_fresh_grace_period(submit, sim_cluster, forgetful):
    (job,) = _running(submit, sim_cluster)
    _lose(forgetful, sim_cluster, [job])
    long_ago = timezone.now() - timedelta(days=1)
    Job.objects.filter(pk=job.pk).update(missing_since=long_ago)
    ForgetfulBackend.hidden.clear()

    seen = cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert (seen.lost, job.missing_since) == (0, None)

    ForgetfulBackend.hidden.add(job.backend_id)
    relost = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    assert (relost.missing, relost.lost) == (1, 0)
    assert job.state == Job.State.RUNNING
    assert job.missing_since is not None
    assert job.missing_since > long_ago + timedelta(seconds=GRACE)


def test_a_lost_job_that_never_started_is_charged_nothing_and_its_whole_hold_released(
    submit, sim_cluster, forgetful, allocation
):
    job = submit(sim_cluster)
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    _lose(forgetful, sim_cluster, [job])  # before any poll saw it run
    Job.objects.filter(pk=job.pk).update(missing_since=F("missing_since") - timedelta(hours=1))

    result = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    hold = Hold.objects.get(pk=job.hold_id)
    allocation.refresh_from_db()
    assert result.lost == 1
    assert (job.state, job.started_at, job.elapsed_seconds) == (Job.State.FAILED, None, 0)
    assert job.charged_cost == 0
    assert (hold.state, hold.charged, hold.released) == (Hold.State.SETTLED, 0, SU_PER_HOUR)
    assert (allocation.held, allocation.charged) == (0, 0)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).exists()
    assert reconcile_ledger().ok
    assert list(job.events.values_list("from_state", "to_state"))[-2:] == [
        (Job.State.QUEUED, Job.State.FAILED),
        (Job.State.FAILED, Job.State.FAILED),
    ]


def test_a_poll_that_fails_marks_no_job_missing_and_ends_none(
    submit, sim_cluster, forgetful, allocation
):
    seen, lost = _running(submit, sim_cluster, 2)
    _lose(forgetful, sim_cluster, [lost])
    Job.objects.filter(pk=lost.pk).update(missing_since=F("missing_since") - timedelta(hours=1))
    ForgetfulBackend.hidden.clear()
    forgetful.set_available(False)

    with pytest.raises(BackendUnavailable):
        cluster_sync(cluster=sim_cluster)

    seen.refresh_from_db()
    lost.refresh_from_db()
    assert (seen.state, seen.missing_since) == (Job.State.RUNNING, None)
    assert (lost.state, lost.finalized_at) == (Job.State.RUNNING, None)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).exists()


def test_pending_and_submitting_jobs_are_never_marked_missing(
    submit, sim_cluster, forgetful, settings
):
    settings.JOBS_MISSING_GRACE_SECONDS = 0
    pending = submit(sim_cluster, name="pending")
    submitting = submit(sim_cluster, name="submitting")
    Job.objects.filter(pk=submitting.pk).update(state=Job.State.SUBMITTING)

    for _ in range(2):
        result = cluster_sync(cluster=sim_cluster)
        assert (result.polled, result.missing, result.lost) == (0, 0, 0)

    assert set(
        Job.objects.filter(pk__in=[pending.pk, submitting.pk]).values_list(
            "state", "missing_since", "finalized_at"
        )
    ) == {(Job.State.PENDING, None, None), (Job.State.SUBMITTING, None, None)}


def test_a_lost_job_that_another_writer_ended_meanwhile_keeps_that_end(
    submit, sim_cluster, forgetful, allocation
):
    (job,) = _running(submit, sim_cluster)
    _lose(forgetful, sim_cluster, [job])
    Job.objects.filter(pk=job.pk).update(missing_since=F("missing_since") - timedelta(hours=1))
    job.refresh_from_db()
    assert job.started_at is not None
    ended_at = job.started_at + timedelta(minutes=10)

    def cancelled_meanwhile() -> None:
        # Between the sync's read of active jobs and its claim, another sync records the end.
        Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED, ended_at=ended_at)

    ForgetfulBackend.during_poll = cancelled_meanwhile
    result = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    assert (result.missing, result.lost, result.finalized) == (1, 0, 1)
    assert (job.state, job.state_reason, job.ended_at) == (Job.State.CANCELLED, "", ended_at)
    assert job.charged_cost == Decimal("0.3517")  # 10 min x 2.11 SU/h
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).count() == 1
    assert not job.events.filter(to_state=Job.State.FAILED).exists()


def test_ending_lost_jobs_takes_the_same_number_of_queries_for_5_or_50(
    submit, sim_cluster, forgetful, allocation
):
    def queries_to_end(count: int) -> int:
        jobs = _running(submit, sim_cluster, count)
        _lose(forgetful, sim_cluster, jobs)
        now = timezone.now()
        Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
            started_at=now - timedelta(hours=3), missing_since=now - timedelta(hours=2)
        )
        with CaptureQueriesContext(connection) as queries:
            result = cluster_sync(cluster=sim_cluster)
        assert result.lost == count
        return len(queries)

    few = queries_to_end(5)
    many = queries_to_end(50)

    assert many == few
    ended = Job.objects.filter(state=Job.State.FAILED, finalized_at__isnull=False)
    assert ended.count() == 55
    assert set(ended.values_list("elapsed_seconds", "charged_cost")) == {(3600, SU_PER_HOUR)}
    assert reconcile_ledger().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_syncs_racing_end_each_lost_job_exactly_once(request):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    sim_cluster = request.getfixturevalue("sim_cluster")
    submit = request.getfixturevalue("submit")
    forgetful = request.getfixturevalue("forgetful")
    jobs = _running(submit, sim_cluster, 30)
    _lose(forgetful, sim_cluster, jobs)
    now = timezone.now()
    Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
        started_at=now - timedelta(hours=3), missing_since=now - timedelta(hours=2)
    )

    lost = at_once(lambda: cluster_sync(cluster=sim_cluster).lost)

    assert sum(lost) == 30
    assert Job.objects.filter(state=Job.State.FAILED, finalized_at__isnull=False).count() == 30
    assert JobEvent.objects.filter(to_state=Job.State.FAILED).count() == 60  # end + charge
    charges = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE)
    assert list(charges.values_list("amount", flat=True)) == [SU_PER_HOUR] * 30
    assert not Hold.objects.filter(state=Hold.State.OPEN).exists()
    assert reconcile_ledger().ok


def test_a_job_the_backend_cannot_check_now_is_neither_missing_nor_ended(
    submit, sim_cluster, forgetful, allocation
):
    # Slurm with its accounting down cannot tell what became of a job slurmctld has
    # forgotten: it answers UNKNOWN, which must not count as the job being gone.
    fresh, overdue = _running(submit, sim_cluster, count=2)
    _lose(forgetful, sim_cluster, [overdue])
    Job.objects.filter(pk=overdue.pk).update(missing_since=F("missing_since") - timedelta(hours=2))
    overdue.refresh_from_db()
    before = overdue.missing_since
    assert before is not None
    ForgetfulBackend.hidden.clear()
    ForgetfulBackend.unsure.update({fresh.backend_id, overdue.backend_id})

    result = cluster_sync(cluster=sim_cluster)

    fresh.refresh_from_db()
    overdue.refresh_from_db()
    assert (result.missing, result.lost) == (0, 0)
    assert fresh.state == overdue.state == Job.State.RUNNING
    assert fresh.missing_since is None
    # Neither cleared (nobody saw it) nor ended (nobody can say it is gone).
    assert overdue.missing_since == before
    assert overdue.hold.state == Hold.State.OPEN


def test_the_job_page_and_the_api_say_since_when_the_cluster_is_silent(
    submit, sim_cluster, forgetful, allocation, alice, api_alice
):
    (job,) = _running(submit, sim_cluster)
    _lose(forgetful, sim_cluster, [job])
    job.refresh_from_db()
    web = Client()
    web.force_login(alice)

    page = web.get(f"/jobs/{job.uuid}/").content.decode()
    data = api_alice.get(f"/api/v1/jobs/{job.uuid}/").json()

    assert "The cluster has not reported this job since" in page
    assert timezone.localtime(job.missing_since, UTC).strftime("%Y-%m-%d %H:%M") in page
    assert datetime.fromisoformat(data["missing_since"]) == job.missing_since
