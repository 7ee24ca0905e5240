"""The staff page of scheduler accounts and `manage.py slurm_sync` against the real slurmdbd:
pushed limits, drift, Slurm's refusals, the repair button, and who may see it."""

from __future__ import annotations

from http import HTTPStatus
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from accounts.models import User
from jobs.models import SchedulerAccount
from jobs.services import accounts_sync
from quotas.models import Cluster
from quotas.policy import FACILITY_ADMINS_GROUP
from tests import factories
from tests.conftest import Tenant
from tests.jobs.slurm.conftest import (
    ALICE_UNIX,
    BOB_UNIX,
    SlurmSite,
    project_allocation,
    refusing_slurm,
)

pytestmark = pytest.mark.slurm

PAGE = "/manage/accounts/"


@pytest.fixture
def admin_client(db: None) -> Client:
    admin = factories.UserFactory(username="dana", email="dana@facility.example")
    admin.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    client = Client()
    client.force_login(admin)
    return client


def _drop_bob(site: SlurmSite, account: str) -> None:
    """Someone removes bob's association behind the portal's back (drift)."""
    site.rest().call(
        "DELETE",
        site.api.dbd("/associations"),
        user="slurm",
        params={"cluster": site.cluster_name, "account": account, "user": BOB_UNIX},
    )


def test_the_page_shows_accounts_pushed_limits_and_drift_and_repair_fixes_it(
    tenant: Tenant,
    managed_cluster: Cluster,
    slurm_site: SlurmSite,
    alice: User,
    bob: User,
    admin_client: Client,
):
    project_allocation(tenant.project, managed_cluster, 1234, {alice: ALICE_UNIX, bob: BOB_UNIX})
    accounts_sync(cluster=managed_cluster)
    account = SchedulerAccount.objects.get(project=tenant.project)

    page = admin_client.get(PAGE)

    assert page.status_code == HTTPStatus.OK
    text = page.content.decode()
    assert account.name in text and "in step" in text
    assert '<td class="num">1,234.00</td>' in text  # the pushed limit, as SU are shown

    _drop_bob(slurm_site, account.name)
    text = admin_client.get(PAGE).content.decode()
    assert "drift" in text and "1 drifted" in text

    response = admin_client.post(f"/manage/accounts/{managed_cluster.uuid}/repair/")

    assert response.status_code == HTTPStatus.FOUND
    text = admin_client.get(PAGE).content.decode()
    assert "0 drifted" in text and "in step" in text


def test_slurm_sync_dry_run_prints_the_drift_and_pushes_nothing_then_repairs_it(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, bob: User
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX, bob: BOB_UNIX})
    accounts_sync(cluster=managed_cluster)
    account = SchedulerAccount.objects.get(project=tenant.project)
    _drop_bob(slurm_site, account.name)
    out = StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("slurm_sync", "--cluster", managed_cluster.name, "--dry-run", stdout=out)

    assert exited.value.code == 1
    assert f"{account.name} (vision-lab.folding)" in out.getvalue()
    assert f"users={ALICE_UNIX}" in out.getvalue()  # what slurmdbd holds now
    out = StringIO()
    call_command("slurm_sync", "--cluster", managed_cluster.name, stdout=out)
    assert "pushed 1, refused 0" in out.getvalue()
    out = StringIO()
    call_command("slurm_sync", "--cluster", managed_cluster.name, "--dry-run", stdout=out)
    assert "0 drifted" in out.getvalue()


def test_a_refusal_is_shown_with_slurms_message(
    tenant: Tenant,
    managed_cluster: Cluster,
    slurm_site: SlurmSite,
    alice: User,
    admin_client: Client,
):
    refusing_slurm(slurm_site)
    managed_cluster.options = {**managed_cluster.options, "gpu_tres": "nosuchgpu"}
    managed_cluster.save(update_fields=["options"])
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    SchedulerAccount.objects.update(gpu_cap=1)
    accounts_sync(cluster=managed_cluster)

    text = admin_client.get(PAGE).content.decode()

    assert "Couldn&#x27;t find TRES matching name:nosuchgpu" in text
    assert "1 refused" in text


def test_the_page_is_a_404_for_project_members(
    managed_cluster: Cluster, alice: User, mallory: User
):
    for user in (alice, mallory):
        client = Client()
        client.force_login(user)
        assert client.get(PAGE).status_code == HTTPStatus.NOT_FOUND


def test_an_empty_page_says_what_to_do_next(admin_client: Client):
    text = admin_client.get(PAGE).content.decode()

    assert "manage_accounts" in text and "slurm_sync --dry-run" in text


def test_slurm_sync_names_an_unknown_cluster(db: None):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="nope"):
        call_command("slurm_sync", "--cluster", "nope")


@pytest.mark.parametrize("value", ["-1", "1000001", "two", "1.5"])
def test_a_bad_gpu_cap_on_the_staff_page_is_a_400_naming_the_field_and_nothing_changes(
    tenant: Tenant, managed_cluster: Cluster, alice: User, admin_client: Client, value: str
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    account = SchedulerAccount.objects.get(project=tenant.project)

    response = admin_client.post(f"/manage/accounts/cap/{account.pk}/", {"gpu_cap": value})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "gpu_cap" in response.content.decode()
    account.refresh_from_db()
    assert account.gpu_cap is None
    assert accounts_sync(cluster=managed_cluster).pushed == 0  # nothing to push


def test_a_gpu_cap_set_on_the_staff_page_is_pushed_at_the_next_tick(
    tenant: Tenant, managed_cluster: Cluster, slurm_site: SlurmSite, alice: User, admin_client
):
    project_allocation(tenant.project, managed_cluster, 1000, {alice: ALICE_UNIX})
    accounts_sync(cluster=managed_cluster)
    account = SchedulerAccount.objects.get(project=tenant.project)

    response = admin_client.post(f"/manage/accounts/cap/{account.pk}/", {"gpu_cap": "3"})

    assert response.status_code == HTTPStatus.FOUND
    accounts_sync(cluster=managed_cluster)
    account.refresh_from_db()
    assert account.gpu_cap == 3 and account.pushed_gpu_cap == 3
    out = StringIO()
    call_command("slurm_sync", "--cluster", managed_cluster.name, "--dry-run", stdout=out)
    assert "0 drifted" in out.getvalue()
