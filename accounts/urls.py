"""Web pages (namespace "accounts") and API routes (under /api/v1/) of accounts and tenancy."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from accounts import api, views
from portal.routing import under

_pages: list[URLPattern | URLResolver] = [
    path("organizations/", views.organization_list, name="organization_list"),
    path("organizations/new/", views.organization_create, name="organization_create"),
    under(
        "organizations/<uuid:uuid>/",
        path("", views.organization_detail, name="organization_detail"),
        path("invite/", views.organization_invite, name="organization_invite"),
        path(
            "invitations/<uuid:invitation_uuid>/revoke/",
            views.invitation_revoke,
            name="invitation_revoke",
        ),
        under(
            "members/<int:user_id>/",
            path("role/", views.organization_member_role, name="organization_member_role"),
            path("remove/", views.organization_member_remove, name="organization_member_remove"),
        ),
    ),
    path("projects/", views.project_list, name="project_list"),
    path("projects/new/", views.project_create, name="project_create"),
    under(
        "projects/<uuid:uuid>/",
        path("", views.project_detail, name="project_detail"),
        path("members/add/", views.project_member_add, name="project_member_add"),
        under(
            "members/<int:user_id>/",
            path("role/", views.project_member_role, name="project_member_role"),
            path("remove/", views.project_member_remove, name="project_member_remove"),
        ),
    ),
    path("invitations/", views.invitation_open, name="invitation_open"),
    path("invitations/pending/", views.invitation_accept, name="invitation_accept"),
    # Links emailed before the code moved into the URL fragment (they expire within a week).
    path("invitations/<str:token>/", views.invitation_legacy_link, name="invitation_legacy_link"),
    path("settings/tokens/", views.api_tokens, name="api_tokens"),
    path("settings/tokens/<uuid:uuid>/revoke/", views.api_token_revoke, name="api_token_revoke"),
]

urlpatterns: list[URLPattern | URLResolver] = [path("", include((_pages, "accounts")))]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("me/", api.MeView.as_view(), name="api-me"),
    path("organizations/", api.OrganizationListView.as_view(), name="api-organization-list"),
    under(
        "organizations/<str:uuid>/",
        path("", api.OrganizationDetailView.as_view(), name="api-organization-detail"),
        path(
            "members/",
            api.OrganizationMemberListView.as_view(),
            name="api-organization-member-list",
        ),
        path(
            "members/<int:user_id>/",
            api.OrganizationMemberDetailView.as_view(),
            name="api-organization-member-detail",
        ),
        path(
            "invitations/",
            api.OrganizationInvitationListView.as_view(),
            name="api-organization-invitation-list",
        ),
        path(
            "invitations/<str:invitation_uuid>/",
            api.OrganizationInvitationDetailView.as_view(),
            name="api-organization-invitation-detail",
        ),
    ),
    path("invitations/accept/", api.InvitationAcceptView.as_view(), name="api-invitation-accept"),
    path("projects/", api.ProjectListView.as_view(), name="api-project-list"),
    under(
        "projects/<str:uuid>/",
        path("", api.ProjectDetailView.as_view(), name="api-project-detail"),
        path("members/", api.ProjectMemberListView.as_view(), name="api-project-member-list"),
        path(
            "members/<int:user_id>/",
            api.ProjectMemberDetailView.as_view(),
            name="api-project-member-detail",
        ),
    ),
    path("tokens/", api.ApiTokenListView.as_view(), name="api-token-list"),
    path("tokens/<str:uuid>/", api.ApiTokenDetailView.as_view(), name="api-token-detail"),
]
