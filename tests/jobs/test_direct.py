"""Work submitted outside the portal, recorded and charged by jobs.services.direct from
hand-made DirectRecords (what a backend's direct_jobs returns) on the simulated cluster; the
real-Slurm path is in tests/jobs/slurm/test_direct.py."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from jobs.backends.base import DirectRecord, UsageRecord
from jobs.models import ClusterAccount, DirectWatermark, Job, JobEvent, SchedulerAccount
from jobs.services import (
    cluster_sync,
    direct_jobs_record,
    direct_key,
    job_read_log,
    job_results,
)
from quotas.models import Allocation, Hold, LedgerEntry, Rate
from quotas.reconcile import reconcile_ledger
from quotas.services import ledger_credit
from tests import factories
from tests.concurrency import at_once
from tests.conftest import signed_in

ACCOUNT = "gpuc-folding"


@pytest.fixture
def project_account(tenant, cluster, alice):
    """alice's project has the Slurm-style account gpuc-folding on the simulated cluster, and
    alice is the cluster user `alice` there."""
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    return SchedulerAccount.objects.create(
        project=tenant.project, cluster=cluster, name=ACCOUNT, state=SchedulerAccount.State.ACTIVE
    )


def record(
    backend_id: str = "4242",
    *,
    seconds: int = 3600,
    gpus: int = 2,
    gpu_type: str = "h100",
    cpus: int = 4,
    memory_mb: int = 8192,
    account: str = ACCOUNT,
    user: str = "alice",
    started_ago: timedelta = timedelta(hours=2),
    state: str = "completed",
    exit_code: int | None = 0,
    **fields,
) -> DirectRecord:
    started = timezone.now().replace(microsecond=0) - started_ago
    return DirectRecord(
        backend_id=backend_id,
        account=account,
        cluster_user=user,
        name="train",
        state=state,
        usage=UsageRecord(
            backend_id=backend_id,
            elapsed_seconds=seconds,
            gpus=gpus,
            gpu_type=gpu_type,
            cpus=cpus,
            memory_mb=memory_mb,
            started_at=started,
            ended_at=started + timedelta(seconds=seconds),
            raw={"source": "slurmdbd", "time_limit_minutes": 120, "partition": "gpu"},
        ),
        exit_code=exit_code,
        submitted_at=fields.pop("submitted_at", started - timedelta(seconds=5)),
        **fields,
    )


def _reconcile_output() -> str:
    out = StringIO()
    call_command("reconcile_ledger", stdout=out)
    return out.getvalue()


def test_a_direct_job_is_recorded_and_charged_its_elapsed_time_at_the_rates_once(
    cluster, allocation, project_account, alice
):
    # 1 h of 2 h100 (2 SU/GPU-hour) + 4 CPUs (0.1 SU/CPU-hour) + 8 GB (0.01 SU/GB-hour).
    result = direct_jobs_record(cluster=cluster, records=[record()])

    assert (result.recorded, result.charged, result.uncovered) == (1, Decimal("4.48"), 0)
    job = Job.objects.get(cluster=cluster, backend_id="4242")
    assert job.origin == Job.Origin.DIRECT
    assert (job.project, job.user) == (project_account.project, alice)
    assert job.cluster_username == "alice"
    assert (job.state, job.exit_code, job.elapsed_seconds) == ("completed", 0, 3600)
    assert job.charged_cost == Decimal("4.48")
    assert job.uncovered_cost is None
    assert job.hold is None and job.finalized_at is not None
    assert (job.gpus, job.gpu_type, job.cpus, job.memory_mb) == (2, "h100", 4, 8192)
    assert job.usage["account"] == ACCOUNT and job.usage["backend_source"] == "slurmdbd"
    allocation.refresh_from_db()
    assert (allocation.charged, allocation.held) == (Decimal("4.48"), 0)
    key = direct_key(cluster, "4242")
    entries = LedgerEntry.objects.filter(job_uuid=job.uuid).order_by("id")
    assert [(e.kind, e.amount, e.idempotency_key) for e in entries] == [
        ("hold", Decimal("4.48"), f"{key}:hold"),
        ("charge", Decimal("4.48"), f"{key}:charge"),
    ]
    assert Hold.objects.get(key=key).state == Hold.State.SETTLED
    events = list(JobEvent.objects.filter(job=job).values_list("to_state", "message"))
    assert "submitted outside the portal" in events[0][1]
    assert events[1][1].startswith("Charged 4.4800 SU for 3600 s")
    assert "Ledger OK" in _reconcile_output()


def test_recording_the_same_jobs_again_changes_nothing(cluster, allocation, project_account):
    records = [record("1"), record("2", seconds=60), record("3_0", gpus=0)]
    first = direct_jobs_record(cluster=cluster, records=records)
    entries = list(LedgerEntry.objects.values_list("pk", flat=True))

    again = direct_jobs_record(cluster=cluster, records=[*records, *records])

    assert (first.recorded, again.recorded, again.known) == (3, 0, 6)
    assert Job.objects.filter(origin=Job.Origin.DIRECT).count() == 3
    assert list(LedgerEntry.objects.values_list("pk", flat=True)) == entries
    allocation.refresh_from_db()
    assert allocation.charged == first.charged
    assert reconcile_ledger().ok


def test_a_direct_job_is_charged_at_the_rates_in_force_when_it_started(
    cluster, allocation, project_account
):
    # h100 goes from 2 to 10 SU/GPU-hour one hour ago; the job started two hours ago.
    factories.RateFactory(
        cluster=cluster,
        resource=Rate.Resource.GPU_HOUR,
        gpu_type="h100",
        su_per_unit=Decimal("10"),
        effective_from=timezone.now() - timedelta(hours=1),
    )
    direct_jobs_record(
        cluster=cluster, records=[record("old", gpus=1, cpus=0, memory_mb=0, seconds=1800)]
    )
    direct_jobs_record(
        cluster=cluster,
        records=[
            record(
                "new",
                gpus=1,
                cpus=0,
                memory_mb=0,
                seconds=1800,
                started_ago=timedelta(minutes=40),
            )
        ],
    )

    charged = dict(Job.objects.values_list("backend_id", "charged_cost"))
    assert charged == {"old": Decimal("1.0000"), "new": Decimal("5.0000")}


def test_a_direct_job_costing_more_than_is_available_takes_what_is_there_and_records_the_rest(
    cluster, allocation, project_account, tenant
):
    # A second allocation ending later: the earliest-ending one is emptied first.
    later = factories.AllocationFactory(
        project=tenant.project,
        clusters=[cluster],
        ends_at=allocation.ends_at + timedelta(days=30),
    )
    ledger_credit(actor=None, allocation=later, amount=Decimal("100"), key="later")
    # 600 h of one h100 = 1200 SU against 1000 + 100 available.
    result = direct_jobs_record(
        cluster=cluster,
        records=[record("big", gpus=1, cpus=0, memory_mb=0, seconds=600 * 3600)],
    )

    assert (result.charged, result.uncovered) == (Decimal("1100"), Decimal("100"))
    job = Job.objects.get(backend_id="big")
    assert (job.charged_cost, job.uncovered_cost) == (Decimal("1100"), Decimal("100"))
    assert job.usage["uncovered"] == "100.0000"
    allocation.refresh_from_db()
    later.refresh_from_db()
    assert (allocation.available, allocation.charged) == (0, Decimal("1000"))
    assert (later.available, later.charged) == (0, Decimal("100"))
    assert allocation.status == later.status == Allocation.Status.EXHAUSTED
    keys = set(Hold.objects.filter(job_uuid=job.uuid).values_list("key", flat=True))
    assert keys == {direct_key(cluster, "big"), f"{direct_key(cluster, 'big')}:2"}
    message = JobEvent.objects.filter(job=job).last().message
    assert "100.0000 SU of its 1200.0000 SU cost exceeded" in message
    assert "Ledger OK" in _reconcile_output()

    # Credited later: recording the job again charges nothing more.
    ledger_credit(actor=None, allocation=later, amount=Decimal("500"), key="later-2")
    direct_jobs_record(
        cluster=cluster,
        records=[record("big", gpus=1, cpus=0, memory_mb=0, seconds=600 * 3600)],
    )
    later.refresh_from_db()
    assert later.charged == Decimal("100")


def test_a_direct_job_with_no_allocation_at_all_is_recorded_uncovered(cluster, project_account):
    result = direct_jobs_record(cluster=cluster, records=[record()])

    job = Job.objects.get(backend_id="4242")
    assert (result.recorded, job.charged_cost, job.uncovered_cost) == (1, 0, Decimal("4.48"))
    assert not LedgerEntry.objects.exists()
    assert reconcile_ledger().ok


def test_a_cluster_user_with_no_portal_user_is_recorded_against_the_project(
    cluster, allocation, project_account
):
    direct_jobs_record(cluster=cluster, records=[record(user="postdoc7")])

    job = Job.objects.get(backend_id="4242")
    assert (job.user, job.cluster_username, job.project) == (
        None,
        "postdoc7",
        project_account.project,
    )
    assert job.charged_cost == Decimal("4.48")
    assert "run by cluster user postdoc7" in JobEvent.objects.filter(job=job).first().message


def test_jobs_under_accounts_the_portal_does_not_manage_are_ignored(
    cluster, allocation, project_account
):
    result = direct_jobs_record(cluster=cluster, records=[record(account="physics")])

    assert (result.recorded, result.unmanaged) == (0, 1)
    assert not Job.objects.exists()
    assert not LedgerEntry.objects.filter(kind="charge").exists()


def test_the_portals_own_jobs_are_skipped_but_a_forged_tag_is_charged(
    cluster, allocation, project_account, tenant, alice
):
    mine = factories_job(tenant, cluster, alice, backend_id="77")
    not_yet = factories_job(tenant, cluster, alice, backend_id="")  # forwarder died mid-way
    records = [
        # an array task of the portal's job 77, tagged with its uuid
        record("77_3", portal_uuid=str(mine.uuid), portal_backend_id="77"),
        record("78", portal_uuid=str(not_yet.uuid), portal_backend_id="78"),
        # sbatch --comment gpuc:<the uuid of alice's portal job> on another Slurm job
        record("79", portal_uuid=str(mine.uuid), portal_backend_id="79"),
        record("80", portal_uuid=str(uuid.uuid4()), portal_backend_id="80"),
        record("81", portal_uuid="not-a-uuid", portal_backend_id="81"),
    ]

    result = direct_jobs_record(cluster=cluster, records=records)

    assert (result.portal, result.recorded) == (2, 3)
    direct = set(Job.objects.filter(origin=Job.Origin.DIRECT).values_list("backend_id", flat=True))
    assert direct == {"79", "80", "81"}


def factories_job(tenant, cluster, user, *, backend_id: str) -> Job:
    return Job.objects.create(
        project=tenant.project,
        user=user,
        cluster=cluster,
        name="portal-job",
        script="echo hi\n",
        state=Job.State.RUNNING if backend_id else Job.State.SUBMITTING,
        backend_id=backend_id,
        cluster_username="alice",
    )


def test_a_reused_scheduler_id_is_a_new_job_under_an_alias(cluster, allocation, project_account):
    earlier = record("5", started_ago=timedelta(days=30))
    later = record("5", started_ago=timedelta(hours=1))
    direct_jobs_record(cluster=cluster, records=[earlier])
    direct_jobs_record(cluster=cluster, records=[later])
    direct_jobs_record(cluster=cluster, records=[earlier, later])

    stamp = int(later.submitted_at.timestamp())
    ids = sorted(Job.objects.filter(origin=Job.Origin.DIRECT).values_list("backend_id", flat=True))
    assert ids == ["5", f"5@{stamp}"]
    assert reconcile_ledger().ok


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_recordings_import_and_charge_once(cluster, allocation, project_account):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    records = [record(str(i), seconds=60 * (i + 1)) for i in range(20)]
    at_once(lambda: direct_jobs_record(cluster=cluster, records=records))

    assert Job.objects.filter(origin=Job.Origin.DIRECT).count() == 20
    assert Hold.objects.count() == 20
    assert LedgerEntry.objects.filter(kind="charge").count() == 20
    assert reconcile_ledger().ok


def test_direct_jobs_show_on_the_list_and_page_as_submitted_outside_the_portal(
    cluster, allocation, project_account, alice
):
    direct_jobs_record(cluster=cluster, records=[record(user="postdoc7")])
    job = Job.objects.get(backend_id="4242")
    web = signed_in(alice)

    listing = web.get("/jobs/?origin=direct")
    page = web.get(f"/jobs/{job.uuid}/")

    assert listing.status_code == page.status_code == HTTPStatus.OK
    assert "submitted outside the portal" in listing.content.decode()
    text = page.content.decode()
    assert "Submitted outside the portal" in text
    assert "cluster user postdoc7" in text and "no portal user has this cluster account" in text
    assert "did not answer" not in text
    assert web.get("/jobs/?origin=portal").content.decode().count(str(job.uuid)) == 0
    assert job_read_log(user=alice, job=job).data == b""
    assert job_results(user=alice, job=job) == []


def test_the_api_gives_the_origin_and_filters_by_it(
    cluster, allocation, project_account, api_alice, api_mallory, mallory_tenant
):
    direct_jobs_record(cluster=cluster, records=[record(user="postdoc7")])
    job = Job.objects.get(backend_id="4242")

    direct = api_alice.get("/api/v1/jobs/?origin=direct")
    portal = api_alice.get("/api/v1/jobs/?origin=portal")
    bad = api_alice.get("/api/v1/jobs/?origin=sbatch")
    detail = api_alice.get(f"/api/v1/jobs/{job.uuid}/")
    theirs = api_mallory.get(f"/api/v1/jobs/{job.uuid}/")

    assert direct.status_code == portal.status_code == detail.status_code == HTTPStatus.OK
    [row] = direct.json()["results"]
    assert (row["id"], row["origin"], row["user"], row["cluster_user"]) == (
        str(job.uuid),
        "direct",
        None,
        "postdoc7",
    )
    assert portal.json()["results"] == []
    assert bad.status_code == HTTPStatus.BAD_REQUEST and "origin" in bad.json()["detail"]
    assert detail.json()["charged_cost"] == "4.4800"
    assert detail.json()["uncovered_cost"] is None
    assert theirs.status_code == HTTPStatus.NOT_FOUND


def test_staff_find_the_uncovered_direct_jobs_in_the_admin(cluster, allocation, project_account):
    big = record("big", gpus=1, cpus=0, memory_mb=0, seconds=600 * 3600)  # 1200 SU
    direct_jobs_record(cluster=cluster, records=[record("fine"), big])
    staff = factories.UserFactory(username="staff", is_staff=True, is_superuser=True)
    web = signed_in(staff)

    uncovered = web.get("/django-admin/jobs/job/?origin=direct&uncovered=yes")

    assert uncovered.status_code == HTTPStatus.OK
    text = uncovered.content.decode()
    fine, big_job = Job.objects.get(backend_id="fine"), Job.objects.get(backend_id="big")
    assert (fine.uncovered_cost, big_job.uncovered_cost) == (None, Decimal("204.48"))
    assert str(big_job.uuid) in text and str(fine.uuid) not in text


def test_a_tick_survives_an_unreachable_accounting_and_keeps_its_watermark(
    tenant, tmp_path, caplog
):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    slurm = factories.ClusterFactory(
        name="down",
        kind="slurm",
        options={"url": "http://127.0.0.1:8799", "jwt_key_file": str(key), "connect_timeout": 1},
    )
    SchedulerAccount.objects.create(project=tenant.project, cluster=slurm, name="gpuc-folding")

    result = cluster_sync(cluster=slurm)
    mark = DirectWatermark.objects.get(cluster=slurm).since
    again = cluster_sync(cluster=slurm)

    assert (result.direct, result.backend_calls, again.backend_calls) == (0, 1, 1)
    assert DirectWatermark.objects.get(cluster=slurm).since == mark
    assert "Direct work on down not searched now" in caplog.text
