"""HTML pages: organizations, projects, members, invitations and API tokens."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core import mail
from django.http import HttpResponse
from django.test import Client

from accounts import services
from accounts.authentication import hash_token
from accounts.models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMember,
    User,
)
from tests import factories

pytestmark = pytest.mark.django_db


def test_the_organizations_page_lists_only_the_users_organizations(
    web, alice, tenant, mallory_tenant
):
    response = web(alice).get("/organizations/")

    assert response.status_code == HTTPStatus.OK
    assert "Vision Lab" in response.content.decode()
    assert "Evil Corp" not in response.content.decode()


def test_the_organization_page_shows_members_and_the_invite_form_to_owners(web, alice, bob, tenant):
    owner_view = web(alice).get(f"/organizations/{tenant.org.uuid}/")
    member_view = web(bob).get(f"/organizations/{tenant.org.uuid}/")

    assert owner_view.status_code == HTTPStatus.OK
    assert "bob@uni.example" in owner_view.content.decode()
    assert "Send invitation" in owner_view.content.decode()
    assert member_view.status_code == HTTPStatus.OK
    assert "Send invitation" not in member_view.content.decode()


def test_creating_an_organization_from_the_form(web, mallory):
    response = web(mallory).post(
        "/organizations/new/", {"name": "Garage Startup", "kind": "company", "slug": ""}
    )

    org = Organization.objects.get(name="Garage Startup")
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == f"/organizations/{org.uuid}/"
    assert Membership.objects.get(organization=org).role == "owner"


def test_a_taken_slug_shows_a_form_error(web, mallory, tenant):
    response = web(mallory).post(
        "/organizations/new/", {"name": "Copy", "kind": "academic", "slug": "vision-lab"}
    )

    assert response.status_code == HTTPStatus.OK
    assert "already in use" in response.content.decode()
    assert not Organization.objects.filter(name="Copy").exists()


def test_an_owner_invites_someone_and_the_email_goes_out(
    web, alice, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = web(alice).post(
            f"/organizations/{tenant.org.uuid}/invite/",
            {
                "email": "carol@uni.example",
                "org_role": "member",
                "project": str(tenant.project.uuid),
                "project_role": "member",
            },
        )

    assert response.status_code == HTTPStatus.FOUND
    invitation = Invitation.objects.get(email="carol@uni.example")
    assert invitation.project == tenant.project
    assert len(mail.outbox) == 1


def test_an_invalid_invitation_email_shows_a_form_error(web, alice, tenant):
    response = web(alice).post(
        f"/organizations/{tenant.org.uuid}/invite/",
        {"email": "not-an-email", "org_role": "member", "project_role": "member"},
    )

    assert response.status_code == HTTPStatus.OK
    assert "valid email" in response.content.decode()
    assert not Invitation.objects.exists()


def test_an_admin_cannot_pick_the_owner_role_in_the_invite_form(web, alice, bob, tenant):
    Membership.objects.filter(organization=tenant.org, user=bob).update(role="admin")

    response = web(bob).post(
        f"/organizations/{tenant.org.uuid}/invite/",
        {"email": "carol@uni.example", "org_role": "owner", "project_role": "member"},
    )

    assert response.status_code == HTTPStatus.OK
    assert not Invitation.objects.exists()


def _open_invitation(client: Client, raw: str) -> HttpResponse:
    """What the landing page's script does with the code from the link's fragment."""
    return client.post("/invitations/", {"token": raw})


def test_the_invitee_accepts_on_the_invitation_page(
    web, alice, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invitation, raw = services.invitation_create(
            actor=alice, organization=tenant.org, email="carol@uni.example"
        )
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    client = web(carol)

    opened = _open_invitation(client, raw)
    page = client.get(opened["Location"])
    accepted = client.post("/invitations/pending/")

    assert opened.status_code == HTTPStatus.FOUND
    assert opened["Location"] == "/invitations/pending/"
    assert page.status_code == HTTPStatus.OK
    assert "Accept invitation" in page.content.decode()
    assert "carol@uni.example" in page.content.decode()
    assert accepted.status_code == HTTPStatus.FOUND
    assert Membership.objects.get(organization=tenant.org, user=carol).role == "member"
    assert client.get("/invitations/pending/").status_code == HTTPStatus.NOT_FOUND


def test_the_emailed_link_keeps_the_code_out_of_the_request_line(
    alice, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invitation, raw = services.invitation_create(
            actor=alice, organization=tenant.org, email="carol@uni.example"
        )

    link = re.search(r"(https?://\S+)", mail.outbox[0].body)

    assert link is not None
    path, _, fragment = link.group(1).partition("#")
    assert fragment == raw  # browsers never send the fragment: it stays out of access logs
    assert raw not in path
    assert path.endswith("/invitations/")


def test_the_landing_page_posts_the_code_from_a_static_script(client):
    response = client.get("/invitations/")

    page = response.content.decode()
    assert response.status_code == HTTPStatus.OK
    assert 'name="token"' in page
    assert "js/invitation" in page


def test_someone_else_cannot_accept_an_invitation_on_the_page(web, alice, mallory, tenant):
    _invitation, raw = services.invitation_create(
        actor=alice, organization=tenant.org, email="carol@uni.example"
    )
    client = web(mallory)
    _open_invitation(client, raw)

    response = client.post("/invitations/pending/")

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "carol@uni.example" in response.content.decode()
    assert not Membership.objects.filter(organization=tenant.org, user=mallory).exists()


def test_an_unknown_invitation_code_is_404(web, alice):
    response = _open_invitation(web(alice), "no-such-token")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert "Invitation not found" in response.content.decode()


def test_an_empty_or_nul_invitation_code_is_a_400_naming_the_field(client):
    empty = client.post("/invitations/", {"token": ""})
    nul = client.post("/invitations/", {"token": "abc\x00"})

    assert empty.status_code == HTTPStatus.BAD_REQUEST
    assert "This field is required" in empty.content.decode()
    assert nul.status_code == HTTPStatus.BAD_REQUEST
    # The site-wide NUL refusal answers before the form, naming the field.
    assert "token" in nul.content.decode()
    assert "NUL character" in nul.content.decode()


def test_the_pending_invitation_page_without_an_opened_invitation_is_404(web, alice):
    response = web(alice).get("/invitations/pending/")

    assert response.status_code == HTTPStatus.NOT_FOUND


def test_signed_out_the_invitation_pages_show_neither_the_address_nor_the_organization(
    client, alice, tenant
):
    _invitation, raw = services.invitation_create(
        actor=alice, organization=tenant.org, email="carol@uni.example"
    )

    landing = client.get("/invitations/")
    opened = _open_invitation(client, raw)
    to_login = client.get(opened["Location"])
    login_page = client.get(to_login["Location"])

    assert opened.status_code == HTTPStatus.FOUND
    assert to_login.status_code == HTTPStatus.FOUND
    assert to_login["Location"] == "/accounts/login/?next=/invitations/pending/"
    for response in (landing, opened, to_login, login_page):
        page = response.content.decode()
        assert "carol@uni.example" not in page
        assert "Vision Lab" not in page
        assert raw not in page


def test_a_link_emailed_before_the_code_moved_to_the_fragment_still_opens_the_invitation(
    web, alice, tenant
):
    _invitation, raw = services.invitation_create(
        actor=alice, organization=tenant.org, email="carol@uni.example"
    )
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    client = web(carol)

    opened = client.get(f"/invitations/{raw}/")
    accepted = client.post(opened["Location"])

    assert opened["Location"] == "/invitations/pending/"
    assert accepted.status_code == HTTPStatus.FOUND
    assert Membership.objects.filter(organization=tenant.org, user=carol).exists()


def test_an_owner_changes_a_role_and_removes_a_member(web, alice, bob, tenant):
    client = web(alice)

    changed = client.post(
        f"/organizations/{tenant.org.uuid}/members/{bob.id}/role/", {"role": "admin"}
    )
    assert changed.status_code == HTTPStatus.FOUND
    assert Membership.objects.get(organization=tenant.org, user=bob).role == "admin"

    removed = client.post(f"/organizations/{tenant.org.uuid}/members/{bob.id}/remove/")
    assert removed.status_code == HTTPStatus.FOUND
    assert not Membership.objects.filter(organization=tenant.org, user=bob).exists()


def test_the_last_owner_leaving_shows_an_error_and_changes_nothing(web, alice, tenant):
    response = web(alice).post(
        f"/organizations/{tenant.org.uuid}/members/{alice.id}/remove/", follow=True
    )

    assert response.status_code == HTTPStatus.OK
    assert "at least one owner" in response.content.decode()
    assert Membership.objects.filter(organization=tenant.org, user=alice).exists()


def test_projects_page_and_project_page(web, bob, tenant, mallory_tenant):
    client = web(bob)

    listing = client.get("/projects/")
    detail = client.get(f"/projects/{tenant.project.uuid}/")

    assert listing.status_code == HTTPStatus.OK
    assert "Protein folding" in listing.content.decode()
    assert "Heist" not in listing.content.decode()
    assert detail.status_code == HTTPStatus.OK
    assert "alice@uni.example" in detail.content.decode()


def test_creating_a_project_from_the_form(web, alice, tenant):
    response = web(alice).post(
        "/projects/new/",
        {"organization": str(tenant.org.uuid), "name": "Climate", "slug": "", "description": ""},
    )

    project = Project.objects.get(name="Climate")
    assert response.status_code == HTTPStatus.FOUND
    assert project.organization == tenant.org
    assert ProjectMember.objects.get(project=project).role == "pi"


def test_a_member_cannot_create_a_project_in_their_organization(web, bob, tenant):
    response = web(bob).post(
        "/projects/new/", {"organization": str(tenant.org.uuid), "name": "Mine", "slug": ""}
    )

    assert response.status_code == HTTPStatus.OK
    assert not Project.objects.filter(name="Mine").exists()


def test_a_pi_adds_a_member_changes_their_role_and_removes_them(web, alice, tenant):
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    Membership.objects.create(organization=tenant.org, user=carol)
    client = web(alice)
    base = f"/projects/{tenant.project.uuid}/members"

    added = client.post(f"{base}/add/", {"user": "carol", "role": "member"})
    assert added.status_code == HTTPStatus.FOUND
    assert ProjectMember.objects.get(project=tenant.project, user=carol).role == "member"

    client.post(f"{base}/{carol.id}/role/", {"role": "manager"})
    assert ProjectMember.objects.get(project=tenant.project, user=carol).role == "manager"

    client.post(f"{base}/{carol.id}/remove/")
    assert not ProjectMember.objects.filter(project=tenant.project, user=carol).exists()


def test_adding_an_outsider_to_a_project_shows_a_form_error(web, alice, mallory, tenant):
    response = web(alice).post(
        f"/projects/{tenant.project.uuid}/members/add/", {"user": "mallory", "role": "member"}
    )

    assert response.status_code == HTTPStatus.OK
    assert "invite them to the organization first" in response.content.decode()
    assert not ProjectMember.objects.filter(project=tenant.project, user=mallory).exists()


def test_the_tokens_page_shows_a_new_token_once(web, alice):
    client = web(alice)

    created = client.post(
        "/settings/tokens/", {"name": "laptop", "scope": "read", "expires_in_days": "30"}
    )
    token = ApiToken.objects.get(user=alice)
    raw = created.context["new_token"]
    later = client.get("/settings/tokens/")

    assert created.status_code == HTTPStatus.OK
    assert raw in created.content.decode()
    assert created["Cache-Control"] == "no-store"
    assert token.token_hash == hash_token(raw)
    assert token.scope == "read"
    assert token.expires_at is not None
    assert later.status_code == HTTPStatus.OK
    assert raw not in later.content.decode()
    assert "laptop" in later.content.decode()


def test_revoking_a_token_from_the_page(web, alice):
    token, _raw = services.api_token_create(actor=alice, name="old")

    response = web(alice).post(f"/settings/tokens/{token.uuid}/revoke/")

    assert response.status_code == HTTPStatus.FOUND
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_pages_need_a_signed_in_user(client, tenant):
    for url in (
        "/organizations/",
        "/projects/",
        "/settings/tokens/",
        f"/projects/{tenant.project.uuid}/",
    ):
        response = client.get(url)
        assert response.status_code == HTTPStatus.FOUND, url
        assert response["Location"].startswith("/accounts/login/"), url


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", "/organizations/{org}/", None),
        (
            "post",
            "/organizations/{org}/invite/",
            {"email": "m@evil.example", "org_role": "member", "project_role": "member"},
        ),
        ("post", "/organizations/{org}/members/{bob}/role/", {"role": "admin"}),
        ("post", "/organizations/{org}/members/{bob}/remove/", {}),
        ("post", "/organizations/{org}/invitations/{invitation}/revoke/", {}),
        ("get", "/projects/{project}/", None),
        ("post", "/projects/{project}/members/add/", {"user": "mallory", "role": "pi"}),
        ("post", "/projects/{project}/members/{bob}/role/", {"role": "pi"}),
        ("post", "/projects/{project}/members/{bob}/remove/", {}),
        ("post", "/settings/tokens/{token}/revoke/", {}),
    ],
)
def test_another_tenants_pages_answer_404(
    web, mallory, mallory_tenant, alice, bob, tenant, method, path, data
):
    token, _raw = services.api_token_create(actor=alice, name="alice's")
    invitation, _ = services.invitation_create(
        actor=alice, organization=tenant.org, email="carol@uni.example"
    )
    url = path.format(
        org=tenant.org.uuid,
        project=tenant.project.uuid,
        bob=bob.id,
        token=token.uuid,
        invitation=invitation.uuid,
    )

    client = web(mallory)
    response = client.get(url) if method == "get" else client.post(url, data)

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert Membership.objects.get(organization=tenant.org, user=bob).role == "member"
    assert ProjectMember.objects.get(project=tenant.project, user=bob).role == "member"
    assert Invitation.objects.filter(organization=tenant.org).count() == 1
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_navigation_links_to_the_account_pages(web, alice):
    response = web(alice).get("/organizations/")

    page = response.content.decode()
    assert 'href="/projects/"' in page
    assert 'href="/settings/tokens/"' in page


def _signup(client: Client, email: str, next_path: str) -> HttpResponse:
    return client.post(
        "/accounts/signup/",
        {
            "email": email,
            "username": "carol",
            "password1": "a long passphrase for carol 42",
            "password2": "a long passphrase for carol 42",
            "next": next_path,
        },
    )


def test_an_invitee_without_an_account_signs_up_with_the_invited_address_and_joins_at_once(
    client, alice, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation, raw = services.invitation_create(
            actor=alice,
            organization=tenant.org,
            email="carol@uni.example",
            project=tenant.project,
        )
    invitation_path = "/invitations/pending/"
    to_login = client.get(_open_invitation(client, raw)["Location"])
    assert to_login["Location"] == f"/accounts/login/?next={invitation_path}"
    sent = len(mail.outbox)

    signed_up = _signup(client, "Carol@uni.example", invitation_path)
    landed = client.get(signed_up["Location"])

    assert signed_up.status_code == HTTPStatus.FOUND
    assert signed_up["Location"] == invitation_path
    assert landed.status_code == HTTPStatus.FOUND
    assert landed["Location"] == f"/projects/{tenant.project.uuid}/"
    carol = User.objects.get(username="carol")
    assert EmailAddress.objects.get(user=carol).verified
    assert Membership.objects.get(organization=tenant.org, user=carol).role == "member"
    assert ProjectMember.objects.get(project=tenant.project, user=carol).role == "member"
    invitation.refresh_from_db()
    assert invitation.accepted_by == carol
    assert len(mail.outbox) == sent  # the invitation proved the address: no second mail


def test_an_invitee_signing_up_with_another_address_verifies_it_and_lands_on_the_invitation(
    client, alice, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invitation, raw = services.invitation_create(
            actor=alice, organization=tenant.org, email="carol@uni.example"
        )
    invitation_path = "/invitations/pending/"
    client.get(_open_invitation(client, raw)["Location"])

    _signup(client, "carol@home.example", invitation_path)
    link = re.search(
        re.escape(settings.SITE_URL) + r"(/accounts/confirm-email/[^/\s]+/)", mail.outbox[-1].body
    )
    assert link is not None
    confirmed = client.post(link.group(1))
    page = client.get(invitation_path)

    assert confirmed["Location"] == invitation_path
    assert "carol@uni.example" in page.content.decode()
    assert not Membership.objects.filter(organization=tenant.org, user__username="carol").exists()
