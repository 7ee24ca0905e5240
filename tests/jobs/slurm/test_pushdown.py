"""Limits pushed into the real Slurm: work submitted with the real `sbatch` on the cluster (as
the Unix user, never through the portal) is bound by the project's allocation and GPU cap."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import User
from jobs.models import SchedulerAccount
from jobs.services import account_name, accounts_sync, scheduler_account_set_cap
from quotas.models import Allocation, Cluster
from quotas.policy import FACILITY_ADMINS_GROUP
from quotas.services import ledger_credit
from tests import factories
from tests.conftest import Tenant, wait_until
from tests.jobs.slurm.conftest import (
    ALICE_UNIX,
    SlurmSite,
    both_slurms,
    project_allocation,
    sbatch,
    squeue_state,
)

pytestmark = pytest.mark.slurm

LIMIT_REASONS = ("AssocGrpBillingMinutes", "AssocGrpBillingRunMinutes")
STARTED = ("RUNNING", "COMPLETING", "COMPLETED", "")  # "" = ended and forgotten already


def _held_by_limit(site: SlurmSite, job_id: str) -> tuple[str, str] | None:
    state, reason = squeue_state(site, job_id)
    return (state, reason) if state == "PENDING" and reason in LIMIT_REASONS else None


@both_slurms
def test_direct_sbatch_beyond_the_allocation_is_held_by_slurm_until_credited(
    tenant: Tenant,
    managed_cluster: Cluster,
    enforcing_slurm: SlurmSite,
    alice: User,
):
    # 30 SU left; one CPU for one minute costs 60 SU (billing weight CPU=60 per minute).
    allocation = project_allocation(tenant.project, managed_cluster, 30, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    account = account_name(managed_cluster, tenant.project.pk)

    job_id = sbatch(enforcing_slurm, ALICE_UNIX, account, minutes=1, seconds=1)

    state, reason = wait_until(
        lambda: _held_by_limit(enforcing_slurm, job_id), timeout=60, what="limit reason"
    )
    assert (state, reason) == ("PENDING", "AssocGrpBillingMinutes")
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(100), key="top-up")
    tick = accounts_sync(cluster=managed_cluster)  # one tick
    assert tick.pushed == 1
    wait_until(
        lambda: squeue_state(enforcing_slurm, job_id)[0] in STARTED, timeout=90, what="job to start"
    )


@both_slurms
def test_a_third_gpu_job_waits_for_the_concurrent_cap(
    tenant: Tenant, managed_cluster: Cluster, enforcing_slurm: SlurmSite, alice: User
):
    project_allocation(tenant.project, managed_cluster, 100_000, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    account = SchedulerAccount.objects.get(project=tenant.project)
    scheduler_account_set_cap(account=account, gpu_cap=2)
    assert accounts_sync(cluster=managed_cluster).pushed == 1

    jobs = [
        sbatch(enforcing_slurm, ALICE_UNIX, account.name, minutes=3, gpus=1, seconds=120)
        for _ in range(3)
    ]

    seen: list[object] = []

    def two_run_one_capped() -> bool:
        states = [squeue_state(enforcing_slurm, j) for j in jobs]
        seen[:] = states
        running = [s for s, _ in states if s == "RUNNING"]
        capped = [r for s, r in states if s == "PENDING" and r == "AssocGrpGRES"]
        return len(running) == 2 and len(capped) == 1

    wait_until(
        two_run_one_capped, timeout=60, what=lambda: f"two running, one AssocGrpGRES: {seen}"
    )


@both_slurms
def test_suspending_an_allocation_in_the_staff_area_blocks_direct_sbatch_within_one_tick(
    tenant: Tenant, managed_cluster: Cluster, enforcing_slurm: SlurmSite, alice: User
):
    allocation = project_allocation(tenant.project, managed_cluster, 100_000, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    admin = factories.UserFactory(username="dana", email="dana@facility.example")
    admin.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    client = Client()
    client.force_login(admin)

    response = client.post(
        f"/manage/allocations/{allocation.uuid}/suspend/",
        {"reason": "audit"},
    )

    assert response.status_code == HTTPStatus.FOUND
    allocation.refresh_from_db()
    assert allocation.status == Allocation.Status.SUSPENDED
    tick = accounts_sync(cluster=managed_cluster)  # one tick
    assert tick.pushed == 1
    account = SchedulerAccount.objects.get(project=tenant.project)
    assert account.pushed_limit_su == Decimal(0)
    job_id = sbatch(enforcing_slurm, ALICE_UNIX, account.name, minutes=1, seconds=1)
    wait_until(lambda: _held_by_limit(enforcing_slurm, job_id), timeout=60, what="limit reason")
