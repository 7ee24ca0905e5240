"""Who manages a project: one rule (accounts.selectors.projects_managed_by), used by accounts'
project page and quotas' grant requests alike."""

from __future__ import annotations

from accounts.models import Membership, ProjectMember
from accounts.selectors import can_manage_project, projects_managed_by
from quotas.selectors import manageable_projects
from tests import factories


def test_the_pi_manages_the_project_and_a_plain_member_does_not(alice, bob, tenant):
    assert can_manage_project(alice, tenant.project)
    assert not can_manage_project(bob, tenant.project)


def test_a_project_manager_manages_the_project(bob, tenant):
    ProjectMember.objects.filter(project=tenant.project, user=bob).update(
        role=ProjectMember.Role.MANAGER
    )

    assert can_manage_project(bob, tenant.project)


def test_an_organization_admin_manages_its_projects_without_being_a_member(tenant):
    admin = factories.UserFactory(username="carol")
    Membership.objects.create(organization=tenant.org, user=admin, role=Membership.Role.ADMIN)

    assert can_manage_project(admin, tenant.project)


def test_a_billing_member_of_the_organization_does_not_manage_its_projects(tenant):
    billing = factories.UserFactory(username="dave")
    Membership.objects.create(organization=tenant.org, user=billing, role=Membership.Role.BILLING)

    assert not can_manage_project(billing, tenant.project)


def test_an_outsider_manages_nothing_of_another_tenant(mallory, mallory_tenant, tenant):
    assert not can_manage_project(mallory, tenant.project)
    assert list(projects_managed_by(mallory)) == [mallory_tenant.project]


def test_a_deactivated_pi_manages_nothing(alice, tenant):
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    assert not can_manage_project(alice, tenant.project)
    assert not projects_managed_by(alice).exists()


def test_quotas_offers_grant_requests_for_exactly_the_projects_accounts_says_are_managed(
    alice, bob, tenant, mallory_tenant
):
    other = factories.ProjectFactory(organization=tenant.org, name="Another", slug="another")

    assert list(manageable_projects(alice)) == [other, tenant.project]
    assert set(manageable_projects(alice)) == set(projects_managed_by(alice))
    assert list(manageable_projects(bob)) == []
