"""Which organizations may use a cluster: Cluster.is_open_to is the only reader of the
"allowed_organizations" option, for the cluster list, grant requests and job submission."""

from __future__ import annotations

import pytest

from accounts.models import Membership
from jobs.exceptions import ClusterNotUsable
from jobs.validation import check_cluster_usable
from quotas.policy import cluster_refusal
from quotas.selectors import clusters_for_user
from tests import factories


def test_a_cluster_without_a_list_is_open_to_every_organization_and_to_none_in_particular():
    cluster = factories.ClusterFactory.build(options={})

    assert cluster.is_open_to("vision-lab")
    assert cluster.is_open_to()


def test_a_cluster_with_a_list_is_open_only_to_the_organizations_on_it():
    cluster = factories.ClusterFactory.build(options={"allowed_organizations": ["vision-lab"]})

    assert cluster.is_open_to("vision-lab")
    assert cluster.is_open_to("evil", "vision-lab")
    assert not cluster.is_open_to("evil")
    assert not cluster.is_open_to()


def test_an_empty_list_closes_the_cluster_to_everyone():
    cluster = factories.ClusterFactory.build(options={"allowed_organizations": []})

    assert not cluster.is_open_to("vision-lab")


def test_the_cluster_list_grant_requests_and_jobs_agree_on_a_closed_cluster(
    alice, mallory, tenant, mallory_tenant
):
    private = factories.ClusterFactory(name="private", options={"allowed_organizations": ["evil"]})
    factories.AllocationFactory(project=tenant.project, clusters=[private])

    assert private not in clusters_for_user(alice)
    assert private in clusters_for_user(mallory)
    assert cluster_refusal(private, tenant.project) == (
        "cluster 'private' is not open to organization 'vision-lab'"
    )
    assert cluster_refusal(private, mallory_tenant.project) is None
    with pytest.raises(ClusterNotUsable, match="may not use cluster private") as refused:
        check_cluster_usable(user=alice, project=tenant.project, cluster=private)
    assert refused.value.field == "cluster"


def test_a_user_without_an_organization_still_sees_the_open_clusters(db):
    loner = factories.UserFactory(username="loner")
    open_cluster = factories.ClusterFactory(name="open", options={})
    factories.ClusterFactory(name="closed", options={"allowed_organizations": ["evil"]})

    assert clusters_for_user(loner) == [open_cluster]
    assert not Membership.objects.filter(user=loner).exists()
