"""Submit -> forward -> run -> finish -> charge, on the simulated cluster's manual clock."""

from __future__ import annotations

from decimal import Decimal

from jobs.models import Job, JobEvent
from jobs.services import cluster_sync, job_cancel, job_forward
from quotas.models import Hold, LedgerEntry


def _charges(job: Job) -> list[Decimal]:
    return list(
        LedgerEntry.objects.filter(job_uuid=job.uuid, kind=LedgerEntry.Kind.CHARGE).values_list(
            "amount", flat=True
        )
    )


def test_a_completed_job_is_charged_elapsed_times_rate_and_the_rest_released(
    submit, sim, sim_cluster, allocation
):
    job = submit(sim_cluster, time_limit_minutes=120, env={"SIM_DURATION_SECONDS": "1800"})
    allocation.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert job.estimated_cost == Decimal("4.2200")
    assert allocation.held == Decimal("4.2200")

    job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING

    sim.advance(1800)
    result = cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    allocation.refresh_from_db()
    assert result.finalized == 1
    assert job.state == Job.State.COMPLETED
    assert job.exit_code == 0
    assert job.elapsed_seconds == 1800
    # 0.5 h × (2 SU/GPU-h + 0.1 SU/CPU-h + 0.01 SU/GB-h)
    assert job.charged_cost == Decimal("1.0550")
    assert _charges(job) == [Decimal("1.0550")]
    assert (allocation.held, allocation.charged) == (0, Decimal("1.0550"))
    assert Hold.objects.get(pk=job.hold_id).state == Hold.State.SETTLED
    assert list(job.events.values_list("to_state", flat=True)) == [
        "pending",
        "queued",
        "running",
        "completed",
        "completed",
    ]


def test_a_script_exiting_3_ends_failed_with_exit_code_3(submit, sim, sim_cluster):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "10", "SIM_EXIT_CODE": "3"})
    job_forward(job_id=job.pk)
    sim.advance(10)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.exit_code == 3
    assert job.finalized_at is not None


def test_a_job_past_its_time_limit_times_out_and_is_charged_for_the_limit(submit, sim, sim_cluster):
    job = submit(sim_cluster, time_limit_minutes=1, env={"SIM_DURATION_SECONDS": "500"})
    job_forward(job_id=job.pk)
    sim.advance(600)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.TIMEOUT
    assert job.elapsed_seconds == 60
    assert job.charged_cost == job.estimated_cost


def test_two_gpus_are_charged_at_the_gpu_rate_twice(submit, sim, sim_cluster):
    job = submit(sim_cluster, gpus=2, cpus=1, memory_mb=1024, env={"SIM_DURATION_SECONDS": "3600"})
    job_forward(job_id=job.pk)
    sim.advance(3600)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.usage["gpus"] == 2
    assert job.charged_cost == Decimal("4.1100")  # 2 × 2 + 0.1 + 0.01


def test_cancelling_a_running_job_charges_its_run_time(submit, sim, sim_cluster, alice):
    job = submit(sim_cluster, env={"SIM_DURATION_SECONDS": "3600"})
    job_forward(job_id=job.pk)
    cluster_sync(cluster=sim_cluster)
    sim.advance(900)

    job_cancel(user=alice, job=job)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING  # the next sync records the end
    cluster_sync(cluster=sim_cluster)

    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.elapsed_seconds == 900
    assert job.charged_cost == Decimal("0.5275")


def test_cancelling_a_pending_job_releases_the_hold_at_once(submit, sim_cluster, alice, allocation):
    job = submit(sim_cluster)
    job_cancel(user=alice, job=job)
    job.refresh_from_db()
    allocation.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.finalized_at is not None
    assert (allocation.held, allocation.charged) == (0, 0)
    # A later forward finds nothing to do.
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.backend_id == ""


def test_an_array_job_holds_and_charges_for_every_task(submit, sim, sim_cluster, allocation):
    job = submit(sim_cluster, array="0-3", gpus=1, env={"SIM_DURATION_SECONDS": "3600"})
    assert job.array_size == 4
    assert job.estimated_cost == Decimal("8.4400")
    job_forward(job_id=job.pk)
    sim.advance(3600)
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.usage["tasks"] == 4
    assert job.charged_cost == Decimal("8.4400")


def test_queued_jobs_start_when_gpus_free_up(submit, sim, sim_cluster):
    big = submit(sim_cluster, name="big", gpus=8, env={"SIM_DURATION_SECONDS": "100"})
    waiting = submit(sim_cluster, name="waiting", gpus=1, env={"SIM_DURATION_SECONDS": "100"})
    job_forward(job_id=big.pk)
    job_forward(job_id=waiting.pk)
    cluster_sync(cluster=sim_cluster)
    waiting.refresh_from_db()
    assert waiting.state == Job.State.QUEUED
    sim.advance(150)
    cluster_sync(cluster=sim_cluster)
    waiting.refresh_from_db()
    assert waiting.state == Job.State.RUNNING
    assert JobEvent.objects.filter(job=waiting, to_state="running").count() == 1
