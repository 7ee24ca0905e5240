"""The accounts API: the caller, tenancy, members, invitations and tokens; tenant isolation."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.models import ApiToken, Membership, Organization, Project, ProjectMember
from tests import factories

pytestmark = pytest.mark.django_db

API = "/api/v1"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


# --- me, organizations, projects -------------------------------------------------------------


def test_me_lists_the_callers_organizations_and_projects_with_roles(
    api_bob, tenant, mallory_tenant
):
    response = api_bob.get(f"{API}/me/")

    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert body["username"] == "bob"
    assert [(o["slug"], o["role"]) for o in body["organizations"]] == [("vision-lab", "member")]
    assert [(p["uuid"], p["role"]) for p in body["projects"]] == [
        (str(tenant.project.uuid), "member")
    ]


def test_organizations_list_only_the_callers(api_alice, tenant, mallory_tenant):
    response = api_alice.get(f"{API}/organizations/")

    assert response.status_code == HTTPStatus.OK
    assert [o["uuid"] for o in response.json()["results"]] == [str(tenant.org.uuid)]


def test_creating_an_organization_makes_the_caller_owner(api_mallory, mallory):
    response = api_mallory.post(
        f"{API}/organizations/", {"name": "Startup", "kind": "company"}, format="json"
    )

    assert response.status_code == HTTPStatus.CREATED
    org = Organization.objects.get(uuid=response.json()["uuid"])
    assert (org.name, org.slug, org.kind) == ("Startup", "startup", "company")
    assert response.json()["role"] == "owner"
    assert Membership.objects.get(organization=org).user == mallory


def test_organization_detail_shows_members_to_members(api_bob, tenant):
    response = api_bob.get(f"{API}/organizations/{tenant.org.uuid}/")

    assert response.status_code == HTTPStatus.OK
    assert {(m["username"], m["role"]) for m in response.json()["members"]} == {
        ("alice", "owner"),
        ("bob", "member"),
    }


def test_creating_a_project_needs_an_organization_owner_or_admin(api_alice, api_bob, tenant):
    body = {"organization": str(tenant.org.uuid), "name": "Weather", "slug": "weather"}

    refused = api_bob.post(f"{API}/projects/", body, format="json")
    created = api_alice.post(f"{API}/projects/", body, format="json")

    assert refused.status_code == HTTPStatus.FORBIDDEN
    assert refused.json()["code"] == "role_required"
    assert created.status_code == HTTPStatus.CREATED
    project = Project.objects.get(uuid=created.json()["uuid"])
    assert project.organization == tenant.org
    assert created.json()["role"] == "pi"
    assert Project.objects.filter(slug="weather").count() == 1


def test_a_duplicate_project_slug_is_a_conflict_naming_the_field(api_alice, tenant):
    body = {"organization": str(tenant.org.uuid), "name": "Again", "slug": "folding"}

    response = api_alice.post(f"{API}/projects/", body, format="json")

    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["field"] == "slug"
    assert not Project.objects.filter(name="Again").exists()


def test_project_detail_and_list(api_bob, tenant):
    detail = api_bob.get(f"{API}/projects/{tenant.project.uuid}/")
    listing = api_bob.get(f"{API}/projects/")

    assert detail.status_code == HTTPStatus.OK
    assert detail.json()["organization"]["uuid"] == str(tenant.org.uuid)
    assert [p["uuid"] for p in listing.json()["results"]] == [str(tenant.project.uuid)]


# --- project members ---------------------------------------------------------------------------


def _carol_in(org):
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    Membership.objects.create(organization=org, user=carol, role="member")
    return carol


def test_a_pi_adds_an_organization_member_by_email(api_alice, tenant):
    carol = _carol_in(tenant.org)

    response = api_alice.post(
        f"{API}/projects/{tenant.project.uuid}/members/",
        {"user": "Carol@uni.example", "role": "manager"},
        format="json",
    )

    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["id"] == carol.id
    assert ProjectMember.objects.get(project=tenant.project, user=carol).role == "manager"


def test_adding_someone_outside_the_organization_is_refused_naming_the_field(
    api_alice, tenant, mallory
):
    response = api_alice.post(
        f"{API}/projects/{tenant.project.uuid}/members/", {"username": "mallory"}, format="json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "username"
    assert response.json()["code"] == "not_organization_member"
    assert not ProjectMember.objects.filter(project=tenant.project, user=mallory).exists()


def test_a_plain_member_cannot_add_project_members(api_bob, tenant):
    carol = _carol_in(tenant.org)

    response = api_bob.post(
        f"{API}/projects/{tenant.project.uuid}/members/", {"user": "carol"}, format="json"
    )

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not ProjectMember.objects.filter(project=tenant.project, user=carol).exists()


def test_a_pi_changes_a_role_and_removes_a_member(api_alice, bob, tenant):
    url = f"{API}/projects/{tenant.project.uuid}/members/{bob.id}/"

    changed = api_alice.patch(url, {"role": "manager"}, format="json")
    membership = ProjectMember.objects.get(project=tenant.project, user=bob)
    assert changed.status_code == HTTPStatus.OK
    assert membership.role == "manager"

    removed = api_alice.delete(url)
    assert removed.status_code == HTTPStatus.NO_CONTENT
    assert not ProjectMember.objects.filter(project=tenant.project, user=bob).exists()


def test_an_invalid_role_is_refused_naming_the_field(api_alice, bob, tenant):
    response = api_alice.patch(
        f"{API}/projects/{tenant.project.uuid}/members/{bob.id}/", {"role": "king"}, format="json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "role"
    assert ProjectMember.objects.get(project=tenant.project, user=bob).role == "member"


def test_demoting_the_last_pi_is_a_conflict(api_alice, alice, tenant):
    response = api_alice.patch(
        f"{API}/projects/{tenant.project.uuid}/members/{alice.id}/",
        {"role": "member"},
        format="json",
    )

    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["code"] == "last_pi"
    assert ProjectMember.objects.get(project=tenant.project, user=alice).role == "pi"


def test_the_last_organization_owner_cannot_leave(api_alice, alice, tenant):
    response = api_alice.delete(f"{API}/organizations/{tenant.org.uuid}/members/{alice.id}/")

    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["code"] == "last_owner"
    assert Membership.objects.filter(organization=tenant.org, user=alice).exists()


def test_an_owner_changes_an_organization_role(api_alice, bob, tenant):
    response = api_alice.patch(
        f"{API}/organizations/{tenant.org.uuid}/members/{bob.id}/",
        {"role": "billing"},
        format="json",
    )

    assert response.status_code == HTTPStatus.OK
    assert Membership.objects.get(organization=tenant.org, user=bob).role == "billing"


# --- invitations -------------------------------------------------------------------------------


def test_an_owner_invites_by_email_and_the_invitee_accepts_with_the_token(
    api_alice, tenant, django_capture_on_commit_callbacks
):
    from django.core import mail

    from tests.conftest import verify_email

    with django_capture_on_commit_callbacks(execute=True):
        response = api_alice.post(
            f"{API}/organizations/{tenant.org.uuid}/invitations/",
            {"email": "carol@uni.example", "project": str(tenant.project.uuid)},
            format="json",
        )
    assert response.status_code == HTTPStatus.CREATED
    assert "token" not in response.json()
    token = mail.outbox[0].body.split("/invitations/#")[1].split()[0]
    carol = factories.UserFactory(username="carol", email="carol@uni.example")
    verify_email(carol)
    api_carol = APIClient()
    api_carol.force_authenticate(carol)

    accepted = api_carol.post(f"{API}/invitations/accept/", {"token": token}, format="json")

    assert accepted.status_code == HTTPStatus.OK
    assert Membership.objects.get(organization=tenant.org, user=carol).role == "member"
    assert ProjectMember.objects.filter(project=tenant.project, user=carol).exists()


def test_members_cannot_list_invitations(api_bob, tenant):
    response = api_bob.get(f"{API}/organizations/{tenant.org.uuid}/invitations/")

    assert response.status_code == HTTPStatus.FORBIDDEN


def test_an_invalid_invitation_email_is_refused_naming_the_field(api_alice, tenant):
    response = api_alice.post(
        f"{API}/organizations/{tenant.org.uuid}/invitations/",
        {"email": "not-an-email"},
        format="json",
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "email"
    assert not tenant.org.invitations.exists()


# --- bad input ---------------------------------------------------------------------------------


def test_malformed_json_is_a_400_and_creates_nothing(api_alice, tenant):
    response = api_alice.post(
        f"{API}/organizations/", data='{"name": "Broken"', content_type="application/json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["code"] == "parse_error"
    assert not Organization.objects.filter(name="Broken").exists()


def test_an_unknown_field_is_a_400_naming_it_and_creates_nothing(api_alice, tenant):
    response = api_alice.post(
        f"{API}/projects/",
        {"organization": str(tenant.org.uuid), "name": "X", "gpus": 8},
        format="json",
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "gpus"
    assert "gpus" in response.json()["detail"]
    assert not Project.objects.filter(name="X").exists()


def test_an_over_long_name_is_a_400_naming_it_and_creates_nothing(api_alice, tenant):
    response = api_alice.post(f"{API}/organizations/", {"name": "x" * 201}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "name"
    assert Organization.objects.count() == 1


def test_an_invalid_billing_email_is_a_400_naming_it_and_creates_nothing(api_alice, tenant):
    response = api_alice.post(
        f"{API}/organizations/", {"name": "Lab", "billing_email": "nope"}, format="json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "billing_email"
    assert not Organization.objects.filter(name="Lab").exists()


def test_a_token_name_too_long_is_refused(api_alice, alice):
    response = api_alice.post(f"{API}/tokens/", {"name": "t" * 101}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "name"
    assert not ApiToken.objects.filter(user=alice).exists()


# --- tenant isolation: mallory gets 404 everywhere ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "organizations/{org}/", None),
        ("get", "organizations/{org}/members/", None),
        ("patch", "organizations/{org}/members/{bob}/", {"role": "admin"}),
        ("delete", "organizations/{org}/members/{bob}/", None),
        ("get", "organizations/{org}/invitations/", None),
        ("post", "organizations/{org}/invitations/", {"email": "m@evil.example"}),
        ("get", "projects/{project}/", None),
        ("get", "projects/{project}/members/", None),
        ("post", "projects/{project}/members/", {"user": "mallory"}),
        ("patch", "projects/{project}/members/{bob}/", {"role": "pi"}),
        ("delete", "projects/{project}/members/{bob}/", None),
        ("get", "tokens/{token}/", None),
        ("delete", "tokens/{token}/", None),
    ],
)
def test_another_tenants_objects_answer_404(
    api_mallory, mallory_tenant, tenant, alice, bob, method, path, body
):
    token, _raw = services.api_token_create(actor=alice, name="alice's")
    url = f"{API}/" + path.format(
        org=tenant.org.uuid, project=tenant.project.uuid, bob=bob.id, token=token.uuid
    )

    response = getattr(api_mallory, method)(url, body, format="json")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json()["code"] == "not_found"
    assert Membership.objects.get(organization=tenant.org, user=bob).role == "member"
    assert ProjectMember.objects.get(project=tenant.project, user=bob).role == "member"
    assert not tenant.org.invitations.exists()
    token.refresh_from_db()
    assert token.revoked_at is None


def test_a_project_in_another_tenants_organization_cannot_be_created(api_mallory, tenant):
    response = api_mallory.post(
        f"{API}/projects/", {"organization": str(tenant.org.uuid), "name": "Trojan"}, format="json"
    )

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json()["field"] == "organization"
    assert not Project.objects.filter(name="Trojan").exists()


def test_a_malformed_uuid_answers_404_not_500(api_alice, tenant):
    response = api_alice.get(f"{API}/projects/not-a-uuid/")

    assert response.status_code == HTTPStatus.NOT_FOUND


# --- tokens ------------------------------------------------------------------------------------


def test_creating_a_token_returns_the_raw_value_once(api_alice, alice):
    created = api_alice.post(f"{API}/tokens/", {"name": "laptop", "scope": "read"}, format="json")
    listed = api_alice.get(f"{API}/tokens/")

    assert created.status_code == HTTPStatus.CREATED
    raw = created.json()["token"]
    token = ApiToken.objects.get(user=alice)
    assert raw.startswith(f"gpuc_{token.prefix}_")
    assert token.token_hash != raw
    assert [t["name"] for t in listed.json()["results"]] == ["laptop"]
    assert "token" not in listed.json()["results"][0]
    assert raw not in listed.content.decode()


def test_a_token_authenticates_as_its_user(alice, tenant):
    _token, raw = services.api_token_create(actor=alice, name="cli")

    response = bearer(raw).get(f"{API}/me/")

    assert response.status_code == HTTPStatus.OK
    assert response.json()["username"] == "alice"


def test_a_read_only_token_cannot_write(alice, tenant):
    _token, raw = services.api_token_create(actor=alice, name="ro", scope="read")
    client = bearer(raw)

    read = client.get(f"{API}/projects/")
    write = client.post(f"{API}/organizations/", {"name": "Nope"}, format="json")

    assert read.status_code == HTTPStatus.OK
    assert write.status_code == HTTPStatus.FORBIDDEN
    assert write.json()["code"] == "permission_denied"
    assert "read-only" in write.json()["detail"]
    assert not Organization.objects.filter(name="Nope").exists()


def test_a_revoked_token_is_refused(api_alice, alice):
    token, raw = services.api_token_create(actor=alice, name="old")

    revoked = api_alice.delete(f"{API}/tokens/{token.uuid}/")
    response = bearer(raw).get(f"{API}/me/")

    assert revoked.status_code == HTTPStatus.NO_CONTENT
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "revoked" in response.json()["detail"]


def test_an_expired_token_is_refused(alice):
    token, raw = services.api_token_create(
        actor=alice, name="short", expires_at=timezone.now() + timedelta(minutes=5)
    )
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = bearer(raw).get(f"{API}/me/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "expired" in response.json()["detail"]


def test_an_unknown_token_is_refused(db):
    response = bearer("gpuc_deadbeef_nope").get(f"{API}/me/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_an_expiry_in_the_past_is_refused_naming_the_field(api_alice, alice):
    past = (timezone.now() - timedelta(days=1)).isoformat()

    response = api_alice.post(f"{API}/tokens/", {"name": "x", "expires_at": past}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "expires_at"
    assert not ApiToken.objects.filter(user=alice).exists()


def test_the_openapi_schema_generates(api_alice):
    response = api_alice.get("/api/schema/?format=json")

    assert response.status_code == HTTPStatus.OK
    paths = response.json()["paths"]
    assert "/api/v1/projects/{uuid}/members/" in paths
    assert "bearerAuth" in response.json()["components"]["securitySchemes"]
