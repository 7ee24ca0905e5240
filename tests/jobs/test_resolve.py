"""jobs.selectors.resolve_project / resolve_cluster: how a job or template request names its
project (uuid or slug, among the caller's projects) and its cluster (name or uuid)."""

from __future__ import annotations

import pytest

from accounts.models import Membership, ProjectMember
from jobs.exceptions import InvalidJob
from jobs.selectors import resolve_cluster, resolve_project
from tests import factories


def test_a_member_names_their_project_by_uuid_or_by_slug(bob, tenant):
    assert resolve_project(bob, str(tenant.project.uuid)) == tenant.project
    assert resolve_project(bob, "folding") == tenant.project


def test_another_tenants_project_is_unknown_by_uuid_and_by_slug(mallory, tenant):
    for value in (str(tenant.project.uuid), "folding"):
        with pytest.raises(InvalidJob, match="Unknown project") as refused:
            resolve_project(mallory, value)
        assert refused.value.field == "project"


def test_a_slug_shared_by_two_of_the_callers_projects_is_ambiguous(alice, tenant):
    other_org = factories.OrganizationFactory(name="Other Lab", slug="other-lab")
    Membership.objects.create(organization=other_org, user=alice, role=Membership.Role.MEMBER)
    twin = factories.ProjectFactory(organization=other_org, name="Folding too", slug="folding")
    ProjectMember.objects.create(project=twin, user=alice, role=ProjectMember.Role.MEMBER)

    with pytest.raises(InvalidJob, match="Project slug 'folding' is ambiguous"):
        resolve_project(alice, "folding")
    assert resolve_project(alice, str(twin.uuid)) == twin


def test_a_cluster_is_named_by_name_or_uuid_and_an_unknown_one_is_refused(cluster):
    assert resolve_cluster("sim") == cluster
    assert resolve_cluster(str(cluster.uuid)) == cluster
    with pytest.raises(InvalidJob, match="Unknown cluster 'nowhere'") as refused:
        resolve_cluster("nowhere")
    assert refused.value.field == "cluster"
