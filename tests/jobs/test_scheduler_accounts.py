"""What the portal wants each project's scheduler account to be (no scheduler needed): the
limit formula, the overspend bound across clusters, and when a tick pushes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from jobs.models import SchedulerAccount
from jobs.services import accounts_create_missing, accounts_wanted
from quotas.models import Allocation, Cluster
from quotas.services import allocation_suspend, ledger_credit, ledger_hold, ledger_settle
from tests import factories
from tests.conftest import Tenant


def _slurm_cluster(name: str) -> Cluster:
    return factories.ClusterFactory(
        name=name,
        kind=Cluster.Kind.SLURM,
        options={
            "url": "http://127.0.0.1:9",
            "jwt_key_file": "/nonexistent/key",
            "shared_root": "/srv/shared",
            "account": "gpucommons",
            "manage_accounts": True,
            "slurm_cluster": name,
        },
    )


def _limits(cluster: Cluster) -> dict[str, Decimal | None]:
    return {w.spec.name: w.spec.limit_su for w in accounts_wanted(cluster=cluster)}


@pytest.fixture
def two_clusters(tenant: Tenant) -> tuple[Cluster, Cluster, Allocation]:
    east, west = _slurm_cluster("east"), _slurm_cluster("west")
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[east, west])
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(1000), key="grant")
    for cluster in (east, west):
        accounts_create_missing(cluster=cluster)
    return east, west, allocation


def test_each_cluster_of_an_allocation_gets_consumed_plus_held_plus_available(
    tenant: Tenant, two_clusters
):
    east, west, allocation = two_clusters
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=east, amount=Decimal(300), key="job-1"
    )
    ledger_settle(actor=None, hold=hold, actual=Decimal(200))  # 200 consumed on east
    ledger_hold(actor=None, project=tenant.project, cluster=east, amount=Decimal(50), key="job-2")

    (east_limit,) = _limits(east).values()
    (west_limit,) = _limits(west).values()

    allocation.refresh_from_db()
    assert allocation.available == Decimal(750)
    assert east_limit == Decimal(200) + Decimal(50) + Decimal(750)
    assert west_limit == Decimal(750)


def test_the_overspend_bound_with_one_allocation_on_two_clusters_is_one_available(
    tenant: Tenant, two_clusters
):
    """Direct work can start on both clusters in the same tick: together they may use at most
    n × available (here 2 × 1000), i.e. (n - 1) × available beyond the allocation; once one
    cluster's use is charged, the other's room is what is left, at its next tick."""
    east, west, allocation = two_clusters
    room = {c.name: next(iter(_limits(c).values())) for c in (east, west)}
    assert sum(room.values()) == 2 * allocation.available  # the bound: n × available

    # East spends the whole allocation directly; the charge lands (g's import or a settle).
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=east, amount=Decimal(1000), key="direct"
    )
    ledger_settle(actor=None, hold=hold, actual=Decimal(1000))

    (east_limit,) = _limits(east).values()
    (west_limit,) = _limits(west).values()
    assert east_limit == Decimal(1000)  # = what east consumed: no room left
    assert west_limit == Decimal(0)  # nothing consumed there, nothing available


def test_a_suspended_allocation_leaves_no_room_and_crediting_an_active_one_adds_it(
    tenant: Tenant, two_clusters
):
    east, _, allocation = two_clusters
    allocation_suspend(actor=None, allocation=allocation, reason="audit")
    assert list(_limits(east).values()) == [Decimal(0)]

    other = factories.AllocationFactory(project=tenant.project, clusters=[east])
    ledger_credit(actor=None, allocation=other, amount=Decimal(40), key="more")

    assert list(_limits(east).values()) == [Decimal(40)]


def test_accounts_are_made_once_per_project_and_cluster(tenant: Tenant, two_clusters):
    east, _, _ = two_clusters

    assert accounts_create_missing(cluster=east) == 0
    names = set(SchedulerAccount.objects.values_list("cluster__name", "name"))
    assert names == {("east", f"gpuc{tenant.project.pk}"), ("west", f"gpuc{tenant.project.pk}")}


def test_an_archived_project_gets_no_new_account(tenant: Tenant):
    cluster = _slurm_cluster("north")
    factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    tenant.project.is_active = False
    tenant.project.save(update_fields=["is_active"])

    assert accounts_create_missing(cluster=cluster) == 0


def _blocked(cluster: Cluster) -> list[bool]:
    return [w.spec.blocked for w in accounts_wanted(cluster=cluster)]


def test_an_account_is_blocked_exactly_while_no_su_is_available_on_its_cluster(
    tenant: Tenant, two_clusters
):
    east, west, _ = two_clusters
    assert _blocked(east) == [False]

    # Portal work holding every SU on east: the limit is unchanged, but no room for new work.
    ledger_hold(actor=None, project=tenant.project, cluster=east, amount=Decimal(1000), key="all")
    assert list(_limits(east).values()) == [Decimal(1000)]
    assert (_blocked(east), _blocked(west)) == ([True], [True])  # one allocation, both clusters

    other = factories.AllocationFactory(project=tenant.project, clusters=[west])
    ledger_credit(actor=None, allocation=other, amount=Decimal(5), key="west-only")
    assert (_blocked(east), _blocked(west)) == ([True], [False])

    allocation_suspend(actor=None, allocation=other, reason="audit")
    assert _blocked(west) == [True]


def test_an_archived_projects_account_is_closed_and_blocked(tenant: Tenant, two_clusters):
    east, _, _ = two_clusters
    tenant.project.is_active = False
    tenant.project.save(update_fields=["is_active"])

    (wanted,) = accounts_wanted(cluster=east)

    assert wanted.spec.closed and wanted.spec.blocked and wanted.spec.limit_su == Decimal(0)
