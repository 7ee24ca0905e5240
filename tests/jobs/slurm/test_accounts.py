"""Project accounts the portal creates in the real slurmdbd (through slurmrestd's accounting
API): one Slurm account per project with an association per member, idempotent under
concurrent ticks, members leaving, projects archived, refusals recorded and retried."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import ProjectMember, User
from jobs.backends.base import BackendUnavailable
from jobs.backends.slurm.options import check_options
from jobs.exceptions import InvalidAccountSetting
from jobs.models import Job, SchedulerAccount
from jobs.services import (
    account_name,
    accounts_drift,
    accounts_sync,
    job_forward,
    scheduler_account_set_cap,
)
from quotas.models import Cluster
from quotas.services import allocation_suspend, ledger_credit
from tests.conftest import Tenant
from tests.jobs.slurm.conftest import (
    ALICE_UNIX,
    BOB_UNIX,
    SlurmSite,
    both_slurms,
    project_allocation,
    refusing_slurm,
    slurm_associations,
    slurm_jobs_tagged,
)

pytestmark = pytest.mark.slurm


def _users(site: SlurmSite, account: str) -> list[str]:
    return sorted(a["user"] for a in slurm_associations(site, account) if a.get("user"))


@both_slurms
def test_a_project_with_an_allocation_gets_one_slurm_account_with_its_members(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, bob: User
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX, bob: BOB_UNIX})

    tick = accounts_sync(cluster=managed_cluster)

    account = SchedulerAccount.objects.get(project=tenant.project, cluster=managed_cluster)
    assert account.name == account_name(managed_cluster, tenant.project.pk)
    assert account.state == SchedulerAccount.State.ACTIVE
    assert account.pushed_at is not None and account.last_error == ""
    assert account.pushed_users == [ALICE_UNIX, BOB_UNIX]
    assert (tick.created, tick.pushed, tick.refused) == (1, 1, {})
    assert _users(slurm_site, account.name) == [ALICE_UNIX, BOB_UNIX]
    assert [d.drifted for d in accounts_drift(cluster=managed_cluster)] == [False]
    # Nothing changed: the next tick pushes nothing.
    again = accounts_sync(cluster=managed_cluster)
    assert (again.created, again.pushed, again.unchanged) == (0, 0, 1)


@both_slurms
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_create_the_account_and_associations_once_without_errors(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, bob: User
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX, bob: BOB_UNIX})
    ticks: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def tick() -> None:
        try:
            start.wait()
            ticks.append(accounts_sync(cluster=Cluster.objects.get(pk=managed_cluster.pk)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert all(t.refused == {} for t in ticks)  # type: ignore[attr-defined]
    account = SchedulerAccount.objects.get(project=tenant.project, cluster=managed_cluster)
    assert account.state == SchedulerAccount.State.ACTIVE and account.last_error == ""
    associations = slurm_associations(slurm_site, account.name)
    assert sorted(a.get("user") or "" for a in associations) == ["", ALICE_UNIX, BOB_UNIX]


@both_slurms
def test_removing_a_member_removes_the_association(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, bob: User
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX, bob: BOB_UNIX})
    accounts_sync(cluster=managed_cluster)
    name = account_name(managed_cluster, tenant.project.pk)
    assert _users(slurm_site, name) == [ALICE_UNIX, BOB_UNIX]

    ProjectMember.objects.filter(project=tenant.project, user=bob).delete()
    tick = accounts_sync(cluster=managed_cluster)

    account = SchedulerAccount.objects.get(name=name)
    assert tick.pushed == 1 and account.pushed_users == [ALICE_UNIX]
    assert _users(slurm_site, name) == [ALICE_UNIX]


def test_removing_a_cluster_account_removes_the_association(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, bob: User
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX, bob: BOB_UNIX})
    accounts_sync(cluster=managed_cluster)
    name = account_name(managed_cluster, tenant.project.pk)

    bob.cluster_accounts.filter(cluster=managed_cluster).delete()
    accounts_sync(cluster=managed_cluster)

    assert _users(slurm_site, name) == [ALICE_UNIX]


@both_slurms
def test_archiving_a_project_closes_its_account(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, bob: User
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX, bob: BOB_UNIX})
    accounts_sync(cluster=managed_cluster)
    tenant.project.is_active = False
    tenant.project.save(update_fields=["is_active"])

    accounts_sync(cluster=managed_cluster)

    account = SchedulerAccount.objects.get(project=tenant.project)
    assert account.state == SchedulerAccount.State.CLOSED and account.closed_at is not None
    assert _users(slurm_site, account.name) == []
    (own,) = [a for a in slurm_associations(slurm_site, account.name) if not a.get("user")]
    assert own["max"]["tres"]["group"]["minutes"][0]["count"] == 0
    # A closed account is pushed once, then left alone.
    assert accounts_sync(cluster=managed_cluster).pushed == 0


@both_slurms
def test_a_portal_job_runs_under_its_project_account(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, api_alice
):
    project_allocation(tenant.project, managed_cluster, 100_000, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    response = api_alice.post(
        "/api/v1/jobs/",
        {
            "project": "folding",
            "cluster": managed_cluster.name,
            "name": "acct",
            "script": "true\n",
            "cpus": 1,
            "memory_mb": 64,
            "time_limit_minutes": 1,
        },
        format="json",
    )
    assert response.status_code == HTTPStatus.CREATED, response.json()
    job = Job.objects.get(uuid=response.json()["id"])

    job_forward(job_id=job.pk)

    job.refresh_from_db()
    assert job.state == Job.State.QUEUED, job.state_reason
    (record,) = slurm_jobs_tagged(slurm_site, job.uuid)
    assert record["account"] == account_name(managed_cluster, tenant.project.pk)


# 22.05 only: slurmdbd 24.11 refuses nothing the portal sends per account (an unknown GRES in
# GrpTRES is silently dropped, unknown users are accepted), so a misnamed gpu_tres shows there
# as drift on the admin page (wanted gres/nosuchgpu=2, held nothing) rather than a refusal.
def test_a_push_slurm_refuses_is_recorded_retried_with_backoff_and_blocks_no_one(
    tenant: Tenant,
    mallory_tenant: Tenant,
    managed_cluster: Cluster,
    slurm_site: SlurmSite,
    alice: User,
    mallory: User,
):
    refusing_slurm(slurm_site)
    # A GPU cap written with a GRES slurmdbd does not track: Slurm refuses that account only.
    managed_cluster.options = {**managed_cluster.options, "gpu_tres": "nosuchgpu"}
    managed_cluster.save(update_fields=["options"])
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX})
    theirs = project_allocation(mallory_tenant.project, managed_cluster, 1000, {mallory: BOB_UNIX})
    accounts_sync(cluster=managed_cluster)  # creates both
    capped = SchedulerAccount.objects.get(project=tenant.project)
    scheduler_account_set_cap(account=capped, gpu_cap=2)
    other = SchedulerAccount.objects.get(project=mallory_tenant.project)
    ledger_credit(actor=None, allocation=theirs, amount=Decimal(500), key="more-for-mallory")

    tick = accounts_sync(cluster=managed_cluster)

    capped.refresh_from_db()
    other.refresh_from_db()
    assert list(tick.refused) == [capped.name]
    assert "nosuchgpu" in capped.last_error  # Slurm's own message
    assert capped.attempts == 1 and capped.retry_at is not None
    assert capped.retry_at > timezone.now()
    assert capped.pushed_gpu_cap is None  # never recorded as pushed
    assert other.last_error == "" and other.pushed_limit_su == Decimal(1500)
    # Backoff: the next tick leaves it alone; once due, it is retried (and refused again).
    assert accounts_sync(cluster=managed_cluster).refused == {}
    SchedulerAccount.objects.filter(pk=capped.pk).update(
        retry_at=timezone.now() - timedelta(seconds=1)
    )
    assert list(accounts_sync(cluster=managed_cluster).refused) == [capped.name]
    capped.refresh_from_db()
    assert capped.attempts == 2
    assert capped.retry_at - timezone.now() > timedelta(seconds=5)


@pytest.mark.parametrize("cap", [-1, 10**9, True, "2"])
def test_a_negative_or_absurd_gpu_cap_is_refused_naming_the_field(
    tenant: Tenant, managed_cluster: Cluster, cap: object
):
    account = SchedulerAccount.objects.create(
        project=tenant.project, cluster=managed_cluster, name="tbadcap1"
    )

    with pytest.raises(InvalidAccountSetting) as refused:
        scheduler_account_set_cap(account=account, gpu_cap=cap)  # type: ignore[arg-type]

    account.refresh_from_db()
    assert refused.value.field == "gpu_cap"
    assert account.gpu_cap is None and account.pushed_at is None


@pytest.mark.parametrize("name", ["Bad Name", "1starts-with-digit", "a" * 64, "semi;colon", ""])
def test_an_account_name_slurm_would_reject_is_refused_by_the_database(
    tenant: Tenant, managed_cluster: Cluster, name: str
):
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        SchedulerAccount.objects.create(project=tenant.project, cluster=managed_cluster, name=name)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("account_prefix", "Bad Prefix", "account_prefix"),
        ("account_prefix", "9x", "account_prefix"),
        ("slurm_cluster", "", "slurm_cluster"),
        ("billing_per_su", -1, "billing_per_su"),
        ("manage_accounts", "yes", "manage_accounts"),
    ],
)
def test_bad_account_options_are_a_check_error_naming_the_option(
    slurm_site: SlurmSite, option: str, value: object, named: str
):
    options = slurm_site.options(manage_accounts=True, slurm_cluster=slurm_site.cluster_name)
    options[option] = value

    problems = check_options(options)

    assert any(named in problem for problem in problems), problems


def test_when_more_accounts_changed_than_a_tick_pushes_shrinking_limits_go_first(
    tenant: Tenant,
    mallory_tenant: Tenant,
    managed_cluster: Cluster,
    alice: User,
    mallory: User,
):
    managed_cluster.options = {**managed_cluster.options, "pushes_per_tick": 1}
    managed_cluster.save(update_fields=["options"])
    ours = project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX})
    theirs = project_allocation(mallory_tenant.project, managed_cluster, 1000, {mallory: BOB_UNIX})
    assert accounts_sync(cluster=managed_cluster).deferred == 1
    assert accounts_sync(cluster=managed_cluster).pushed == 1  # both exist now
    ledger_credit(actor=None, allocation=theirs, amount=Decimal(5), key="growth")
    allocation_suspend(actor=None, allocation=ours, reason="audit")

    tick = accounts_sync(cluster=managed_cluster)

    assert (tick.pushed, tick.deferred) == (1, 1)
    cut = SchedulerAccount.objects.get(project=tenant.project)
    assert cut.pushed_limit_su == Decimal(0)  # the suspension went first
    grown = SchedulerAccount.objects.get(project=mallory_tenant.project)
    assert grown.pushed_limit_su == Decimal(1000)
    accounts_sync(cluster=managed_cluster)
    grown.refresh_from_db()
    assert grown.pushed_limit_su == Decimal(1005)


def _submit(api_alice: Any, cluster: Cluster, name: str) -> Job:
    response = api_alice.post(
        "/api/v1/jobs/",
        {
            "project": "folding",
            "cluster": cluster.name,
            "name": name,
            "script": "true\n",
            "cpus": 1,
            "memory_mb": 64,
            "time_limit_minutes": 1,
        },
        format="json",
    )
    assert response.status_code == HTTPStatus.CREATED, response.json()
    return Job.objects.get(uuid=response.json()["id"])


def test_a_job_submitted_before_its_account_reaches_slurm_waits_for_it_then_runs_under_it(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, api_alice
):
    allocation = project_allocation(tenant.project, managed_cluster, 100_000, {alice: ALICE_UNIX})
    job = _submit(api_alice, managed_cluster, "too-early")  # no account pushed yet

    with pytest.raises(BackendUnavailable, match="Waiting for the cluster account"):
        job_forward(job_id=job.pk)

    job.refresh_from_db()
    allocation.refresh_from_db()
    name = account_name(managed_cluster, tenant.project.pk)
    assert job.state == Job.State.PENDING and job.forward_attempts == 1
    assert job.state_reason.startswith("Waiting for the cluster account")
    assert name in job.state_reason and ALICE_UNIX in job.state_reason
    assert job.events.filter(message=job.state_reason).count() == 1
    assert allocation.held > 0  # still held: the job is not rejected
    assert slurm_jobs_tagged(slurm_site, job.uuid) == []

    accounts_sync(cluster=managed_cluster)
    deadline = time.monotonic() + 60
    while True:  # as the forward task retries, until slurmctld has learnt the association
        try:
            job_forward(job_id=job.pk)
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline, "slurmctld never learnt the pushed account"
            time.sleep(0.5)

    job.refresh_from_db()
    assert job.state == Job.State.QUEUED, job.state_reason
    (record,) = slurm_jobs_tagged(slurm_site, job.uuid)
    assert record["account"] == name


def test_a_job_whose_account_never_reaches_slurm_is_rejected_once_it_has_waited_long_enough(
    tenant: Tenant, managed_cluster: Cluster, alice: User, api_alice, settings
):
    allocation = project_allocation(tenant.project, managed_cluster, 100_000, {alice: ALICE_UNIX})
    job = _submit(api_alice, managed_cluster, "waited")
    wait = timedelta(seconds=settings.JOBS_ACCOUNT_WAIT_SECONDS)
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - wait - timedelta(seconds=1))

    job_forward(job_id=job.pk)

    job.refresh_from_db()
    allocation.refresh_from_db()
    assert job.state == Job.State.REJECTED
    assert "Invalid account" in job.state_reason
    assert (allocation.held, allocation.charged) == (0, 0)


def test_a_job_refused_for_an_account_pushed_long_ago_is_rejected_at_once(
    tenant: Tenant, managed_cluster: Cluster, alice: User, api_alice
):
    """The portal pushed it an hour ago, yet Slurm does not know it (removed by hand): waiting
    would not help."""
    project_allocation(tenant.project, managed_cluster, 100_000, {alice: ALICE_UNIX})
    long_ago = timezone.now() - timedelta(hours=1)
    SchedulerAccount.objects.create(
        project=tenant.project,
        cluster=managed_cluster,
        name=account_name(managed_cluster, tenant.project.pk),
        state=SchedulerAccount.State.ACTIVE,
        pushed_at=long_ago,
        pushed_users=[ALICE_UNIX],
        created_at=long_ago,
    )
    alice.cluster_accounts.filter(cluster=managed_cluster).update(created_at=long_ago)
    job = _submit(api_alice, managed_cluster, "drifted")

    job_forward(job_id=job.pk)

    job.refresh_from_db()
    assert job.state == Job.State.REJECTED
    assert "Invalid account" in job.state_reason
