"""Work submitted outside the portal on the real Slurm: `sbatch` run as a project member
under the project's Slurm account is found in slurmdbd by the portal's sync, recorded as a
direct job and charged once from Slurm's own accounting; the portal's own jobs and jobs under
accounts the portal does not manage are left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from accounts.models import User
from jobs.drafts import JobDraft
from jobs.models import Job, SchedulerAccount
from jobs.services import (
    accounts_sync,
    cluster_direct_sync,
    cluster_sync,
    job_forward,
    job_submit,
)
from quotas.models import Allocation, Cluster, Hold, LedgerEntry
from tests.conftest import Tenant, signed_in
from tests.jobs.slurm.conftest import (
    ALICE_UNIX,
    CPU_SU_PER_HOUR,
    ENV_FILES,
    SlurmSite,
    _unavailable,
    both_slurms,
    project_allocation,
    read_env_file,
    sacct_field,
    sync_until,
)

pytestmark = pytest.mark.slurm

# Beat's interval between two syncs of a cluster (JOBS_SYNC_INTERVAL_SECONDS).
TICK = settings.CELERY_BEAT_SCHEDULE["jobs-sync-all-clusters"]["schedule"].total_seconds()
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _run(
    site: SlurmSite, argv: list[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """One of the site's commands (its own binaries and slurm.conf)."""
    return subprocess.run(  # noqa: S603 (argv lists of fixed words and generated names)
        argv, capture_output=True, text=True, timeout=60, check=check, env=site.command_env()
    )


@pytest.fixture
def project_account(
    slurm_site: SlurmSite, slurm_cluster: Cluster, slurm_allocation: Allocation, tenant: Tenant
) -> Iterator[SchedulerAccount]:
    """The project's own Slurm account (made with sacctmgr, as engineer f's push will) with
    gpuc-test1 (alice) associated, and its SchedulerAccount row; removed afterwards."""
    if os.geteuid() != 0:
        _unavailable("Running sbatch as gpuc-test1 needs root (runuser)")
    name = f"gpuct{uuid.uuid4().hex[:10]}"
    cluster_name = read_env_file(ENV_FILES[slurm_site.version]).get("SLURM_CLUSTER_NAME", "")
    sacctmgr = slurm_site.command("sacctmgr")
    where = [f"cluster={cluster_name}"] if cluster_name else []
    parent = slurm_site.account or "root"
    _run(slurm_site, [*sacctmgr, "-i", "add", "account", name, f"parent={parent}", *where])
    try:
        _run(slurm_site, [*sacctmgr, "-i", "add", "user", ALICE_UNIX, f"account={name}", *where])
        yield SchedulerAccount.objects.create(
            project=tenant.project,
            cluster=slurm_cluster,
            name=name,
            state=SchedulerAccount.State.ACTIVE,
        )
    finally:
        # sacctmgr refuses to remove an association with jobs still running under it.
        _run(slurm_site, [*slurm_site.command("scancel"), f"--account={name}"], check=False)
        for _ in range(20):
            _run(
                slurm_site,
                [*sacctmgr, "-i", "delete", "user", f"name={ALICE_UNIX}", f"account={name}"],
                check=False,
            )
            gone = _run(
                slurm_site, [*sacctmgr, "-i", "delete", "account", f"name={name}"], check=False
            )
            if not gone.returncode:
                break
            time.sleep(0.5)


def sbatch(site: SlurmSite, account: str, *extra: str) -> str:
    """`sbatch --wrap 'sleep 2'` run by gpuc-test1 on the login node (here), as a user would."""
    argv = [
        shutil.which("runuser") or "/usr/sbin/runuser",
        "-u",
        ALICE_UNIX,
        "--",
        *site.command("sbatch"),
        "--parsable",
        f"--account={account}",
        "--chdir=/tmp",
        "--output=/dev/null",
        "--mem=128",
        *([f"--partition={site.partition}"] if site.partition else []),
        *extra,
        "--wrap",
        "sleep 2",
    ]
    return _run(site, argv).stdout.strip().split(";")[0]


def wait_accounted(site: SlurmSite, job_id: str, timeout: float = 90) -> None:
    """Until slurmdbd holds the job's end (what the portal reads)."""
    deadline = time.monotonic() + timeout
    while sacct_field(site, job_id, "State").split(" ")[0] not in FINAL:
        if time.monotonic() > deadline:
            pytest.fail(f"Slurm job {job_id} not ended in accounting after {timeout} s")
        time.sleep(0.5)


def sync_ticks(cluster: Cluster, *, until: Callable[[], bool], ticks: int = 2) -> None:
    """Run the sync at beat's cadence until `until()` holds, at most `ticks` times."""
    for tick in range(ticks):
        if tick:
            time.sleep(TICK)
        cluster_sync(cluster=cluster)
        if until():
            return
    pytest.fail(f"not done within {ticks} sync ticks")


def _reconcile() -> str:
    out = StringIO()
    call_command("reconcile_ledger", stdout=out)
    return out.getvalue()


@both_slurms
def test_a_direct_sbatch_job_is_found_within_two_ticks_and_charged_exactly_once(
    slurm_site: SlurmSite,
    slurm_cluster: Cluster,
    slurm_allocation: Allocation,
    project_account: SchedulerAccount,
    alice: User,
) -> None:
    direct_id = sbatch(slurm_site, project_account.name)
    # The same user's job under an account the portal does not manage.
    other_id = sbatch(slurm_site, slurm_site.account or "root")
    wait_accounted(slurm_site, direct_id)
    wait_accounted(slurm_site, other_id)

    # At beat's cadence (slurmrestd's accounting answers lag sacct's by a second or so).
    sync_ticks(slurm_cluster, until=Job.objects.filter(backend_id=direct_id).exists)

    job = Job.objects.get(cluster=slurm_cluster, backend_id=direct_id)
    elapsed = int(sacct_field(slurm_site, direct_id, "ElapsedRaw"))
    cpus = int(sacct_field(slurm_site, direct_id, "AllocCPUS"))
    assert (job.origin, job.state, job.project) == ("direct", "completed", project_account.project)
    assert (job.user, job.cluster_username) == (alice, ALICE_UNIX)
    assert job.elapsed_seconds == elapsed and job.cpus == cpus
    # 3600 SU per CPU-hour, no memory rate: elapsed seconds x CPUs, from Slurm's accounting.
    assert job.charged_cost == Decimal(elapsed * cpus) * CPU_SU_PER_HOUR / 3600
    assert job.uncovered_cost is None and job.hold is None
    entries = list(
        LedgerEntry.objects.filter(job_uuid=job.uuid).values_list("pk", "kind", "amount")
    )
    assert [(kind, amount) for _, kind, amount in entries] == [
        ("hold", job.charged_cost),
        ("charge", job.charged_cost),
    ]
    assert not Job.objects.filter(backend_id=other_id).exists()

    # Re-running the sync changes nothing: same job rows, same ledger entries.
    rows = list(Job.objects.order_by("pk").values_list("pk", "backend_id", "charged_cost"))
    ledger = list(LedgerEntry.objects.order_by("pk").values_list("pk", flat=True))
    cluster_sync(cluster=slurm_cluster)
    cluster_sync(cluster=slurm_cluster)
    assert list(Job.objects.order_by("pk").values_list("pk", "backend_id", "charged_cost")) == rows
    assert list(LedgerEntry.objects.order_by("pk").values_list("pk", flat=True)) == ledger
    slurm_allocation.refresh_from_db()
    assert (slurm_allocation.charged, slurm_allocation.held) == (job.charged_cost, 0)
    assert "Ledger OK" in _reconcile()

    web = signed_in(alice)
    listing = web.get("/jobs/").content.decode()
    page = web.get(f"/jobs/{job.uuid}/").content.decode()
    assert f"/jobs/{job.uuid}/" in listing and "submitted outside the portal" in listing
    assert "Submitted outside the portal" in page and f"Job {direct_id} ran" in page


@both_slurms
def test_a_short_direct_job_under_the_account_the_portal_pushed_is_charged_once_in_two_ticks(
    slurm_site: SlurmSite,
    managed_cluster: Cluster,
    enforcing_slurm: SlurmSite,
    tenant: Tenant,
    alice: User,
) -> None:
    """The whole loop on each cluster: the portal makes the account and pushes its limits; a
    member's own sbatch within them runs, is found, charged once and reconciles."""
    allocation = project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX})
    assert accounts_sync(cluster=managed_cluster).pushed == 1
    account = SchedulerAccount.objects.get(project=tenant.project, cluster=managed_cluster)

    # 2 minutes of 1 CPU = 120 billing minutes, within the 1000 pushed.
    direct_id = sbatch(slurm_site, account.name, "--time=2")
    wait_accounted(slurm_site, direct_id)
    assert sacct_field(slurm_site, direct_id, "State") == "COMPLETED"
    sync_ticks(managed_cluster, until=Job.objects.filter(backend_id=direct_id).exists)

    job = Job.objects.get(cluster=managed_cluster, backend_id=direct_id)
    elapsed = int(sacct_field(slurm_site, direct_id, "ElapsedRaw"))
    cpus = int(sacct_field(slurm_site, direct_id, "AllocCPUS"))
    assert (job.origin, job.state, job.project) == ("direct", "completed", tenant.project)
    assert job.charged_cost == Decimal(elapsed * cpus) * CPU_SU_PER_HOUR / 3600
    ledger = list(LedgerEntry.objects.order_by("pk").values_list("pk", flat=True))
    cluster_sync(cluster=managed_cluster)
    assert list(LedgerEntry.objects.order_by("pk").values_list("pk", flat=True)) == ledger
    allocation.refresh_from_db()
    assert (allocation.charged, allocation.held) == (job.charged_cost, 0)
    assert "Ledger OK" in _reconcile()


@both_slurms
def test_an_array_submitted_directly_is_charged_task_by_task(
    slurm_site: SlurmSite,
    slurm_cluster: Cluster,
    project_account: SchedulerAccount,
) -> None:
    array_id = sbatch(slurm_site, project_account.name, "--array=0-2")
    tasks = [f"{array_id}_{i}" for i in range(3)]
    for task in tasks:
        wait_accounted(slurm_site, task)

    sync_ticks(slurm_cluster, until=lambda: Job.objects.count() == 3)

    jobs = {j.backend_id: j for j in Job.objects.filter(origin=Job.Origin.DIRECT)}
    assert sorted(jobs) == tasks
    for task, job in jobs.items():
        elapsed = int(sacct_field(slurm_site, task, "ElapsedRaw"))
        assert job.charged_cost == Decimal(elapsed) * CPU_SU_PER_HOUR / 3600
    assert "Ledger OK" in _reconcile()


@both_slurms
def test_a_portal_job_under_the_project_account_is_never_imported_as_direct(
    slurm_site: SlurmSite,
    slurm_cluster: Cluster,
    slurm_allocation: Allocation,
    project_account: SchedulerAccount,
    tenant: Tenant,
    alice: User,
) -> None:
    # Portal jobs run under the project's account (as they will once accounts are pushed).
    slurm_cluster.options = {**slurm_cluster.options, "account": project_account.name}
    slurm_cluster.save()
    job = job_submit(
        user=alice,
        project=tenant.project,
        cluster=slurm_cluster,
        draft=JobDraft(
            name="portal",
            script="sleep 1\n",
            cpus=1,
            memory_mb=128,
            time_limit_minutes=2,
        ),
    )
    job_forward(job_id=job.pk)
    sync_until(slurm_cluster, [job])
    wait_accounted(slurm_site, job.backend_id)
    assert sacct_field(slurm_site, job.backend_id, "Account") == project_account.name
    cluster_sync(cluster=slurm_cluster)
    cluster_sync(cluster=slurm_cluster)

    assert list(Job.objects.values_list("uuid", "origin")) == [(job.uuid, "portal")]
    assert Hold.objects.count() == 1  # the portal job's own hold, settled once
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert "Ledger OK" in _reconcile()


@both_slurms
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_import_a_direct_job_once(
    slurm_site: SlurmSite,
    slurm_cluster: Cluster,
    slurm_allocation: Allocation,
    project_account: SchedulerAccount,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    job_ids = [sbatch(slurm_site, project_account.name) for _ in range(3)]
    for job_id in job_ids:
        wait_accounted(slurm_site, job_id)
    time.sleep(TICK)  # slurmrestd's accounting answers lag sacct's by a second or so
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def tick() -> None:
        try:
            barrier.wait()
            results.append(cluster_direct_sync(cluster=slurm_cluster).recorded)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == [0, 3]
    assert sorted(Job.objects.values_list("backend_id", flat=True)) == sorted(job_ids)
    assert Hold.objects.count() == LedgerEntry.objects.filter(kind="charge").count() == 3
    assert "Ledger OK" in _reconcile()
