"""Role rules, invitations and API tokens, through the services every interface calls."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts import selectors, services
from accounts.authentication import hash_token
from accounts.exceptions import (
    AlreadyMember,
    InvalidExpiry,
    InvitationEmailMismatch,
    InvitationUnusable,
    LastOwner,
    LastPI,
    NotAllowed,
    NotOrganizationMember,
    SlugTaken,
)
from accounts.models import ApiToken, Invitation, Membership, Organization, ProjectMember
from portal.errors import NotFound
from tests import factories
from tests.conftest import verify_email

pytestmark = pytest.mark.django_db


def _membership(org, user):
    return Membership.objects.get(organization=org, user=user)


def _project_member(project, user):
    return ProjectMember.objects.get(project=project, user=user)


def test_creating_an_organization_makes_the_creator_its_owner(alice):
    org = services.org_create(actor=alice, name="Robotics Group")

    assert org.slug == "robotics-group"
    assert _membership(org, alice).role == Membership.Role.OWNER


def test_a_taken_organization_slug_is_refused_and_nothing_is_created(alice, tenant):
    with pytest.raises(SlugTaken) as err:
        services.org_create(actor=alice, name="Another", slug="vision-lab")

    assert err.value.field == "slug"
    assert Organization.objects.filter(name="Another").count() == 0


def test_a_blank_slug_is_derived_from_the_name_and_made_unique(alice, tenant):
    org = services.org_create(actor=alice, name="Vision Lab")

    assert org.slug == "vision-lab-2"


def test_the_last_owner_cannot_step_down_or_leave(alice, tenant):
    owner = _membership(tenant.org, alice)

    with pytest.raises(LastOwner):
        services.membership_role_change(actor=alice, membership=owner, role="member")
    with pytest.raises(LastOwner):
        services.membership_remove(actor=alice, membership=owner)

    owner.refresh_from_db()
    assert owner.role == Membership.Role.OWNER


def test_an_owner_can_step_down_once_another_owner_exists(alice, bob, tenant):
    services.membership_role_change(
        actor=alice, membership=_membership(tenant.org, bob), role="owner"
    )
    services.membership_role_change(
        actor=alice, membership=_membership(tenant.org, alice), role="admin"
    )

    assert _membership(tenant.org, alice).role == Membership.Role.ADMIN
    assert _membership(tenant.org, bob).role == Membership.Role.OWNER


def test_an_admin_cannot_grant_or_take_away_the_owner_role(alice, bob, tenant):
    carol = factories.UserFactory(username="carol")
    Membership.objects.create(organization=tenant.org, user=carol, role="admin")
    services.membership_role_change(
        actor=alice, membership=_membership(tenant.org, bob), role="admin"
    )

    with pytest.raises(NotAllowed):
        services.membership_role_change(
            actor=carol, membership=_membership(tenant.org, bob), role="owner"
        )
    with pytest.raises(NotAllowed):
        services.membership_remove(actor=carol, membership=_membership(tenant.org, alice))

    assert _membership(tenant.org, bob).role == Membership.Role.ADMIN
    assert Membership.objects.filter(organization=tenant.org, user=alice).exists()


def test_a_plain_member_cannot_change_roles(bob, alice, tenant):
    with pytest.raises(NotAllowed):
        services.membership_role_change(
            actor=bob, membership=_membership(tenant.org, alice), role="member"
        )


def test_an_outsider_is_told_the_organization_does_not_exist(mallory, bob, tenant):
    with pytest.raises(NotFound):
        services.membership_remove(actor=mallory, membership=_membership(tenant.org, bob))

    assert Membership.objects.filter(organization=tenant.org, user=bob).exists()


def test_removing_someone_from_an_organization_removes_them_from_its_projects(alice, bob, tenant):
    services.membership_remove(actor=alice, membership=_membership(tenant.org, bob))

    assert not Membership.objects.filter(organization=tenant.org, user=bob).exists()
    assert not ProjectMember.objects.filter(project=tenant.project, user=bob).exists()


def test_a_member_may_leave_on_their_own(bob, tenant):
    services.membership_remove(actor=bob, membership=_membership(tenant.org, bob))

    assert not Membership.objects.filter(organization=tenant.org, user=bob).exists()


def test_only_organization_owners_and_admins_create_projects(alice, bob, tenant):
    with pytest.raises(NotAllowed):
        services.project_create(actor=bob, organization=tenant.org, name="Side project")

    project = services.project_create(actor=alice, organization=tenant.org, name="Side project")

    assert _project_member(project, alice).role == ProjectMember.Role.PI
    assert not ProjectMember.objects.filter(project=project, user=bob).exists()


def test_a_project_member_must_first_belong_to_the_organization(alice, mallory, tenant):
    with pytest.raises(NotOrganizationMember):
        services.project_member_add(actor=alice, project=tenant.project, user=mallory)

    assert not ProjectMember.objects.filter(project=tenant.project, user=mallory).exists()


def test_adding_someone_twice_is_a_conflict(alice, bob, tenant):
    with pytest.raises(AlreadyMember):
        services.project_member_add(actor=alice, project=tenant.project, user=bob)


def test_a_manager_manages_members_but_cannot_make_a_pi(alice, bob, tenant):
    carol = factories.UserFactory(username="carol")
    Membership.objects.create(organization=tenant.org, user=carol, role="member")
    services.project_member_role_change(
        actor=alice, member=_project_member(tenant.project, bob), role="manager"
    )

    services.project_member_add(actor=bob, project=tenant.project, user=carol, role="member")
    with pytest.raises(NotAllowed):
        services.project_member_role_change(
            actor=bob, member=_project_member(tenant.project, carol), role="pi"
        )
    with pytest.raises(NotAllowed):
        services.project_member_remove(actor=bob, member=_project_member(tenant.project, alice))

    assert _project_member(tenant.project, carol).role == ProjectMember.Role.MEMBER
    assert _project_member(tenant.project, alice).role == ProjectMember.Role.PI


def test_a_plain_project_member_cannot_add_people(bob, tenant):
    carol = factories.UserFactory(username="carol")
    Membership.objects.create(organization=tenant.org, user=carol, role="member")

    with pytest.raises(NotAllowed):
        services.project_member_add(actor=bob, project=tenant.project, user=carol)


def test_the_last_pi_cannot_be_demoted_or_removed(alice, tenant):
    pi = _project_member(tenant.project, alice)

    with pytest.raises(LastPI):
        services.project_member_role_change(actor=alice, member=pi, role="member")
    with pytest.raises(LastPI):
        services.project_member_remove(actor=alice, member=pi)

    pi.refresh_from_db()
    assert pi.role == ProjectMember.Role.PI


def test_an_organization_admin_sees_and_manages_projects_they_are_not_in(alice, bob, tenant):
    carol = factories.UserFactory(username="carol")
    Membership.objects.create(organization=tenant.org, user=carol, role="admin")

    project = selectors.project_get_for_user(carol, tenant.project.uuid)
    services.project_member_role_change(
        actor=carol, member=_project_member(tenant.project, bob), role="pi"
    )

    assert project == tenant.project
    assert project.my_role is None
    assert _project_member(tenant.project, bob).role == ProjectMember.Role.PI


def test_selectors_hide_other_tenants(alice, mallory, tenant, mallory_tenant):
    assert list(selectors.organizations_for_user(mallory)) == [mallory_tenant.org]
    assert list(selectors.projects_for_user(mallory)) == [mallory_tenant.project]
    with pytest.raises(NotFound):
        selectors.project_get_for_user(mallory, tenant.project.uuid)
    with pytest.raises(NotFound):
        selectors.organization_get_for_user(mallory, tenant.org.uuid)
    with pytest.raises(NotFound):
        selectors.project_get_for_user(mallory, "not-a-uuid")
    assert selectors.project_role(alice, tenant.project) == "pi"
    assert selectors.org_role(mallory, tenant.org) is None


# --- invitations ----------------------------------------------------------------------------


@pytest.fixture
def invite(alice, tenant, django_capture_on_commit_callbacks):
    """alice invites someone to her organization; the email goes out (on commit)."""

    def _invite(email="carol@uni.example", **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return services.invitation_create(
                actor=alice, organization=tenant.org, email=email, **kwargs
            )

    return _invite


def test_an_invitation_is_emailed_with_a_link_whose_token_is_stored_hashed(alice, tenant, invite):
    invitation, raw = invite(project=tenant.project)

    invitation.refresh_from_db()
    assert invitation.token_hash == hash_token(raw)
    assert raw not in invitation.token_hash
    assert invitation.expires_at > timezone.now() + timedelta(days=6)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["carol@uni.example"]
    assert f"/invitations/#{raw}" in mail.outbox[0].body
    assert "Vision Lab" in mail.outbox[0].subject


def test_accepting_an_invitation_joins_the_organization_and_project(alice, tenant, invite):
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    verify_email(carol)
    _invitation, raw = invite(org_role="admin", project=tenant.project, project_role="manager")

    invitation = services.invitation_accept(actor=carol, raw_token=raw)

    invitation.refresh_from_db()
    assert invitation.accepted_by == carol
    assert _membership(tenant.org, carol).role == Membership.Role.ADMIN
    assert _project_member(tenant.project, carol).role == ProjectMember.Role.MANAGER
    with pytest.raises(InvitationUnusable):
        services.invitation_accept(actor=carol, raw_token=raw)


def test_an_invitation_cannot_be_accepted_by_someone_with_another_email(
    alice, mallory, tenant, invite
):
    verify_email(mallory)
    _invitation, raw = invite()

    with pytest.raises(InvitationEmailMismatch):
        services.invitation_accept(actor=mallory, raw_token=raw)

    assert not Membership.objects.filter(organization=tenant.org, user=mallory).exists()


def test_an_invitation_needs_the_matching_address_to_be_verified(alice, tenant, invite):
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    _invitation, raw = invite()

    with pytest.raises(InvitationEmailMismatch):
        services.invitation_accept(actor=carol, raw_token=raw)

    assert not Membership.objects.filter(organization=tenant.org, user=carol).exists()


def test_an_expired_invitation_is_refused(alice, tenant, invite):
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    verify_email(carol)
    invitation, raw = invite()
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(InvitationUnusable):
        services.invitation_accept(actor=carol, raw_token=raw)

    assert not Membership.objects.filter(organization=tenant.org, user=carol).exists()


def test_inviting_again_replaces_the_pending_invitation(alice, tenant, invite):
    first, _ = invite()
    second, _ = invite()

    first.refresh_from_db()
    assert first.revoked_at is not None
    assert list(selectors.organization_invitations_pending(tenant.org)) == [second]


def test_members_cannot_invite_and_admins_cannot_invite_owners(alice, bob, tenant):
    with pytest.raises(NotAllowed):
        services.invitation_create(actor=bob, organization=tenant.org, email="x@uni.example")
    Membership.objects.filter(organization=tenant.org, user=bob).update(role="admin")
    with pytest.raises(NotAllowed):
        services.invitation_create(
            actor=bob, organization=tenant.org, email="x@uni.example", org_role="owner"
        )

    assert Invitation.objects.count() == 0


def test_inviting_a_current_member_is_a_conflict(alice, tenant):
    with pytest.raises(AlreadyMember):
        services.invitation_create(actor=alice, organization=tenant.org, email="BOB@uni.example")


# --- API tokens -----------------------------------------------------------------------------


def test_an_api_token_is_returned_once_and_only_its_hash_is_stored(alice):
    token, raw = services.api_token_create(actor=alice, name="laptop", scope="read")

    token.refresh_from_db()
    assert re.fullmatch(r"gpuc_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}", raw)
    assert raw.startswith(f"gpuc_{token.prefix}_")
    assert token.token_hash == hash_token(raw)
    assert raw not in token.token_hash
    assert token.scope == ApiToken.Scope.READ


def test_a_token_cannot_expire_in_the_past(alice):
    with pytest.raises(InvalidExpiry):
        services.api_token_create(
            actor=alice, name="old", expires_at=timezone.now() - timedelta(minutes=1)
        )

    assert ApiToken.objects.count() == 0


def test_only_the_owner_can_revoke_a_token(alice, mallory):
    token, _raw = services.api_token_create(actor=alice, name="laptop")

    with pytest.raises(NotFound):
        services.api_token_revoke(actor=mallory, token=token)
    services.api_token_revoke(actor=alice, token=token)

    token.refresh_from_db()
    assert token.revoked_at is not None
