"""jobs.selectors.resolve_project / resolve_cluster: how a job or template request names its
project (uuid or slug, among the caller's projects) and its cluster (name or uuid)."""

from __future__ import annotations

import pytest

from accounts.models import Membership, ProjectMember
from jobs.exceptions import ClusterNotUsable, InvalidJob
from jobs.models import ClusterAccount
from jobs.selectors import (
    resolve_cluster,
    resolve_project,
    resolve_submit_target,
    resolve_target,
)
from jobs.validation import SubmitAccess, check_submit_access, read_submit_access
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


# --- resolve_target: both in one statement, for the submit path ---------------------------


def test_resolve_target_answers_as_the_two_resolvers_do_in_one_statement(
    bob, tenant, cluster, django_assert_num_queries
):
    cluster.options = {"gpu_types": ["h100"], "max_time_minutes": 90}
    cluster.save()
    for project_ref in (str(tenant.project.uuid), "folding"):
        for cluster_ref in ("sim", str(cluster.uuid)):
            with django_assert_num_queries(1):
                project, found = resolve_target(bob, project_ref, cluster_ref)
            assert project == tenant.project and found == cluster
            assert project.organization == tenant.project.organization
            assert project.name == tenant.project.name and project.slug == "folding"
            assert found.options == {"gpu_types": ["h100"], "max_time_minutes": 90}
            assert found.kind == cluster.kind and found.enabled is True


def test_resolve_target_names_the_project_first_then_the_cluster(bob, mallory, tenant, cluster):
    with pytest.raises(InvalidJob, match="Unknown project 'nope'") as refused:
        resolve_target(bob, "nope", "nowhere")
    assert refused.value.field == "project"
    with pytest.raises(InvalidJob, match="Unknown project"):
        resolve_target(mallory, str(tenant.project.uuid), "sim")
    with pytest.raises(InvalidJob, match="Unknown cluster 'nowhere'") as refused:
        resolve_target(bob, "folding", "nowhere")
    assert refused.value.field == "cluster"


def test_resolve_target_refuses_an_ambiguous_slug_and_sees_managed_projects(alice, tenant, cluster):
    other_org = factories.OrganizationFactory(name="Other Lab", slug="other-lab")
    Membership.objects.create(organization=other_org, user=alice, role=Membership.Role.OWNER)
    twin = factories.ProjectFactory(organization=other_org, name="Folding too", slug="folding")

    with pytest.raises(InvalidJob, match="Project slug 'folding' is ambiguous"):
        resolve_target(alice, "folding", "sim")
    # An organization owner who is not a project member still names it (as resolve_project).
    assert resolve_target(alice, str(twin.uuid), "sim") == (twin, cluster)


# --- resolve_submit_target: the target and what the access check reads, in one statement ----


def test_resolve_submit_target_reads_what_the_access_check_reads_in_the_same_statement(
    alice, bob, tenant, cluster, allocation, accounts, django_assert_num_queries
):
    other_org = factories.OrganizationFactory(name="Other Lab", slug="other-lab")
    Membership.objects.create(organization=other_org, user=alice, role=Membership.Role.OWNER)
    managed = factories.ProjectFactory(organization=other_org, name="Managed", slug="managed")
    carol = factories.UserFactory(username="carol")
    ProjectMember.objects.create(project=tenant.project, user=carol, role=ProjectMember.Role.MEMBER)
    cases = [
        (bob, "folding"),  # a member with an account, the project funded on the cluster
        (alice, str(managed.uuid)),  # an owner, no member, no allocation
        (carol, "folding"),  # a member without a cluster account
    ]
    for user, project_ref in cases:
        with django_assert_num_queries(1):
            project, found, access = resolve_submit_target(user, project_ref, "sim")
        assert (project, found) == resolve_target(user, project_ref, "sim")
        assert access == read_submit_access(user=user, project=project, cluster=found)
    assert resolve_submit_target(bob, "folding", "sim").access == SubmitAccess(
        member=True,
        allocated=True,
        account_id=ClusterAccount.objects.get(user=bob, cluster=cluster).pk,
        username=ClusterAccount.objects.get(user=bob, cluster=cluster).username,
        uid=ClusterAccount.objects.get(user=bob, cluster=cluster).uid,
    )
    access = resolve_submit_target(alice, str(managed.uuid), "sim").access
    assert access is not None and not access.member and not access.allocated


def test_the_access_check_refuses_the_same_way_on_what_resolve_submit_target_read(
    alice, tenant, cluster, allocation, accounts
):
    other_org = factories.OrganizationFactory(name="Other Lab", slug="other-lab")
    Membership.objects.create(organization=other_org, user=alice, role=Membership.Role.OWNER)
    managed = factories.ProjectFactory(organization=other_org, name="Managed", slug="managed")
    carol = factories.UserFactory(username="carol")
    ProjectMember.objects.create(project=tenant.project, user=carol, role=ProjectMember.Role.MEMBER)

    for user, project_ref, refusal in (
        (alice, str(managed.uuid), "You are not a member of this project"),
        (carol, "folding", "You have no account on cluster sim yet"),
    ):
        project, found, access = resolve_submit_target(user, project_ref, "sim")
        answers = []
        for known in (access, None):  # read with the target, or by the check itself
            with pytest.raises((InvalidJob, ClusterNotUsable), match=refusal) as refused:
                check_submit_access(user=user, project=project, cluster=found, access=known)
            answers.append((type(refused.value), str(refused.value), refused.value.field))
        assert answers[0] == answers[1]
