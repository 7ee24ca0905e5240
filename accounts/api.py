"""REST API for the caller, tenancy (organizations, projects, members, invitations) and tokens.

Thin: serializers parse, one service or selector per request. Every object is looked up
through a selector scoped to the caller, so another tenant's UUID answers 404.
"""

from __future__ import annotations

import uuid as uuid_lib
from http import HTTPStatus
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.exceptions import NotAllowed, NotOrganizationMember
from accounts.models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMember,
    User,
)
from portal.api import OptionalEmailField, StrictFieldsMixin, ValuesRenderer
from portal.errors import DomainError, NotFound
from portal.ids import as_uuid
from portal.sql import PreparedValues
from portal.users import acting_user

NIL_UUID = uuid_lib.UUID(int=0)

# --- serializers --------------------------------------------------------------------------


class OrganizationSerializer(serializers.ModelSerializer[Organization]):
    role = serializers.CharField(source="my_role", read_only=True, allow_null=True)
    billing_email = OptionalEmailField(help_text="Where invoices go; null when not set.")

    class Meta:
        model = Organization
        fields = ["uuid", "name", "slug", "kind", "billing_email", "created_at", "role"]
        read_only_fields = fields


class OrganizationRefSerializer(serializers.ModelSerializer[Organization]):
    class Meta:
        model = Organization
        fields = ["uuid", "name", "slug"]
        read_only_fields = fields


class OrganizationCreateSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(
        choices=Organization.Kind.choices, required=False, default=Organization.Kind.ACADEMIC
    )
    billing_email = serializers.EmailField(required=False, allow_blank=True, default="")


class MembershipSerializer(serializers.ModelSerializer[Membership]):
    id = serializers.IntegerField(source="user.id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    name = serializers.CharField(source="user.get_full_name", read_only=True)
    joined_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "name", "role", "joined_at"]
        read_only_fields = fields


class OrganizationDetailSerializer(OrganizationSerializer):
    members = serializers.SerializerMethodField()

    class Meta(OrganizationSerializer.Meta):
        fields = [*OrganizationSerializer.Meta.fields, "members"]
        read_only_fields = fields

    @extend_schema_field(MembershipSerializer(many=True))
    def get_members(self, org: Organization) -> Any:
        return MembershipSerializer(selectors.organization_memberships(org), many=True).data


class ProjectSerializer(serializers.ModelSerializer[Project]):
    organization = OrganizationRefSerializer(read_only=True)
    role = serializers.CharField(source="my_role", read_only=True, allow_null=True)

    class Meta:
        model = Project
        fields = [
            "uuid",
            "name",
            "slug",
            "description",
            "organization",
            "is_active",
            "created_at",
            "role",
        ]
        read_only_fields = fields


class ProjectCreateSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    organization = serializers.UUIDField()
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False, allow_blank=True, default="")
    description = serializers.CharField(
        max_length=10_000, required=False, allow_blank=True, default=""
    )


class ProjectMemberSerializer(serializers.ModelSerializer[ProjectMember]):
    id = serializers.IntegerField(source="user.id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    name = serializers.CharField(source="user.get_full_name", read_only=True)
    joined_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = ProjectMember
        fields = ["id", "username", "email", "name", "role", "joined_at"]
        read_only_fields = fields


class ProjectMemberAddSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    """Name the person by exactly one of `user` (email or username), `email` or `username`."""

    user = serializers.CharField(max_length=254, required=False)
    email = serializers.EmailField(required=False)
    username = serializers.CharField(max_length=150, required=False)
    role = serializers.ChoiceField(
        choices=ProjectMember.Role.choices, required=False, default=ProjectMember.Role.MEMBER
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("user", "email", "username") if attrs.get(k)]
        if len(given) != 1:
            raise serializers.ValidationError(
                {"user": ["Give exactly one of user (email or username), email or username."]}
            )
        attrs["login"] = attrs[given[0]]
        return attrs


class RoleSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    role = serializers.CharField(max_length=16)


class InvitationSerializer(serializers.ModelSerializer[Invitation]):
    organization = OrganizationRefSerializer(read_only=True)
    project = serializers.UUIDField(source="project.uuid", read_only=True, allow_null=True)
    invited_by = serializers.CharField(source="invited_by.username", read_only=True)

    class Meta:
        model = Invitation
        fields = [
            "uuid",
            "email",
            "organization",
            "org_role",
            "project",
            "project_role",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]
        read_only_fields = fields


class InvitationCreateSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    email = serializers.EmailField()
    org_role = serializers.ChoiceField(
        choices=Membership.Role.choices, required=False, default=Membership.Role.MEMBER
    )
    project = serializers.UUIDField(required=False, allow_null=True, default=None)
    project_role = serializers.ChoiceField(
        choices=ProjectMember.Role.choices, required=False, default=ProjectMember.Role.MEMBER
    )


class InvitationAcceptSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    token = serializers.CharField(max_length=200)


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "uuid",
            "name",
            "prefix",
            "scope",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "active",
        ]
        read_only_fields = fields


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The raw token, shown only once.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class ApiTokenCreateSerializer(StrictFieldsMixin, serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(
        choices=ApiToken.Scope.choices, required=False, default=ApiToken.Scope.WRITE
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class MeSerializer(serializers.ModelSerializer[User]):
    organizations = serializers.SerializerMethodField()
    projects = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "email", "first_name", "last_name", "organizations", "projects"]
        read_only_fields = fields

    @extend_schema_field(OrganizationSerializer(many=True))
    def get_organizations(self, user: User) -> Any:
        orgs = selectors.organizations_for_user(user).order_by("name")
        return OrganizationSerializer(orgs, many=True).data

    @extend_schema_field(ProjectSerializer(many=True))
    def get_projects(self, user: User) -> Any:
        projects = selectors.projects_for_user(user).order_by("organization__name", "name")
        return ProjectSerializer(projects, many=True).data


# --- helpers ----------------------------------------------------------------------------


def _valid(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _require_role(role_value: str, choices: list[str]) -> str:
    if role_value not in choices:
        raise DomainError(f'"{role_value}" is not a valid choice.', field="role")
    return role_value


# --- views ------------------------------------------------------------------------------


# me/ is polled: its rows are read as values and rendered as these serializers render them.
ME_ROWS = ValuesRenderer(
    MeSerializer, sources={"organizations": "organizations", "projects": "projects"}
)
ORGANIZATION_ROWS = ValuesRenderer(OrganizationSerializer)
PROJECT_ROWS = ValuesRenderer(ProjectSerializer)


# ...and their two statements compiled once per process (portal.sql), run with the caller's id.
ME_ORGANIZATIONS = PreparedValues(
    lambda user_id: (
        selectors.organizations_for_user(User(pk=user_id))
        .order_by("name")
        .values(*ORGANIZATION_ROWS.keys)
    )
)
ME_PROJECTS = PreparedValues(
    lambda user_id: (
        selectors.projects_for_user(User(pk=user_id))
        .order_by("organization__name", "name")
        .values(*PROJECT_ROWS.keys)
    )
)


class MeView(APIView):
    @extend_schema(responses=MeSerializer, summary="The caller, their organizations and projects")
    def get(self, request: Request) -> Response:
        user = acting_user(request)
        row = {key: getattr(user, key) for key in ME_ROWS.keys}
        row["organizations"] = ORGANIZATION_ROWS.render(ME_ORGANIZATIONS.rows({"user_id": user.pk}))
        row["projects"] = PROJECT_ROWS.render(ME_PROJECTS.rows({"user_id": user.pk}))
        return Response(ME_ROWS.render([row])[0])


class OrganizationListView(generics.ListAPIView[Organization]):
    serializer_class = OrganizationSerializer

    def get_queryset(self) -> QuerySet[Organization]:
        return selectors.organizations_for_user(self.request.user)

    @extend_schema(
        request=OrganizationCreateSerializer,
        responses={HTTPStatus.CREATED: OrganizationSerializer},
        summary="Create an organization (you become its owner)",
    )
    def post(self, request: Request) -> Response:
        org = services.org_create(
            actor=acting_user(request), **_valid(OrganizationCreateSerializer, request)
        )
        org = selectors.organization_get_for_user(request.user, org.uuid)
        return Response(OrganizationSerializer(org).data, status=HTTPStatus.CREATED)


class OrganizationDetailView(APIView):
    @extend_schema(responses=OrganizationDetailSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        org = selectors.organization_get_for_user(request.user, uuid)
        return Response(OrganizationDetailSerializer(org).data)


class OrganizationMemberListView(generics.ListAPIView[Membership]):
    serializer_class = MembershipSerializer

    def get_queryset(self) -> QuerySet[Membership]:
        org = selectors.organization_get_for_user(self.request.user, self.kwargs["uuid"])
        return selectors.organization_memberships(org)


class OrganizationMemberDetailView(APIView):
    @extend_schema(request=RoleSerializer, responses=MembershipSerializer)
    def patch(self, request: Request, uuid: str, user_id: int) -> Response:
        membership = selectors.organization_member_get(request.user, uuid, user_id)
        role = _require_role(_valid(RoleSerializer, request)["role"], Membership.Role.values)
        membership = services.membership_role_change(
            actor=acting_user(request), membership=membership, role=role
        )
        return Response(MembershipSerializer(membership).data)

    @extend_schema(request=None, responses={HTTPStatus.NO_CONTENT: None})
    def delete(self, request: Request, uuid: str, user_id: int) -> Response:
        membership = selectors.organization_member_get(request.user, uuid, user_id)
        services.membership_remove(actor=acting_user(request), membership=membership)
        return Response(status=HTTPStatus.NO_CONTENT)


class OrganizationInvitationListView(generics.ListAPIView[Invitation]):
    serializer_class = InvitationSerializer

    def get_queryset(self) -> QuerySet[Invitation]:
        org = selectors.organization_get_for_user(self.request.user, self.kwargs["uuid"])
        if not selectors.can_manage_organization(self.request.user, org):
            raise NotAllowed("Only organization owners and admins see invitations")
        return selectors.organization_invitations_pending(org)

    @extend_schema(
        request=InvitationCreateSerializer,
        responses={HTTPStatus.CREATED: InvitationSerializer},
        summary="Invite someone by email (the link is emailed, never returned)",
    )
    def post(self, request: Request, uuid: str) -> Response:
        org = selectors.organization_get_for_user(request.user, uuid)
        data = _valid(InvitationCreateSerializer, request)
        project = None
        if data["project"] is not None:
            project = selectors.project_get_for_user(request.user, data["project"])
            if project.organization_id != org.pk:
                raise NotFound("Project not found", field="project")
        invitation, _raw = services.invitation_create(
            actor=acting_user(request),
            organization=org,
            email=data["email"],
            org_role=data["org_role"],
            project=project,
            project_role=data["project_role"],
        )
        return Response(InvitationSerializer(invitation).data, status=HTTPStatus.CREATED)


class OrganizationInvitationDetailView(APIView):
    @extend_schema(request=None, responses={HTTPStatus.NO_CONTENT: None})
    def delete(self, request: Request, uuid: str, invitation_uuid: str) -> Response:
        org = selectors.organization_get_for_user(request.user, uuid)
        invitation = (
            selectors.organization_invitations_pending(org)
            .filter(uuid=as_uuid(invitation_uuid) or NIL_UUID)
            .first()
        )
        if invitation is None:
            raise NotFound("Invitation not found")
        services.invitation_revoke(actor=acting_user(request), invitation=invitation)
        return Response(status=HTTPStatus.NO_CONTENT)


class InvitationAcceptView(APIView):
    @extend_schema(
        request=InvitationAcceptSerializer,
        responses=InvitationSerializer,
        summary="Accept an invitation with the token from its emailed link",
    )
    def post(self, request: Request) -> Response:
        token = _valid(InvitationAcceptSerializer, request)["token"]
        invitation = services.invitation_accept(actor=acting_user(request), raw_token=token)
        return Response(InvitationSerializer(invitation).data)


class ProjectListView(generics.ListAPIView[Project]):
    serializer_class = ProjectSerializer

    def get_queryset(self) -> QuerySet[Project]:
        return selectors.projects_for_user(self.request.user)

    @extend_schema(
        request=ProjectCreateSerializer,
        responses={HTTPStatus.CREATED: ProjectSerializer},
        summary="Create a project (organization owners/admins; you become its PI)",
    )
    def post(self, request: Request) -> Response:
        data = _valid(ProjectCreateSerializer, request)
        try:
            org = selectors.organization_get_for_user(request.user, data.pop("organization"))
        except NotFound:
            raise NotFound("Organization not found", field="organization") from None
        project = services.project_create(actor=acting_user(request), organization=org, **data)
        project = selectors.project_get_for_user(request.user, project.uuid)
        return Response(ProjectSerializer(project).data, status=HTTPStatus.CREATED)


class ProjectDetailView(APIView):
    @extend_schema(responses=ProjectSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        project = selectors.project_get_for_user(request.user, uuid)
        return Response(ProjectSerializer(project).data)


class ProjectMemberListView(generics.ListAPIView[ProjectMember]):
    serializer_class = ProjectMemberSerializer

    def get_queryset(self) -> QuerySet[ProjectMember]:
        project = selectors.project_get_for_user(self.request.user, self.kwargs["uuid"])
        return selectors.project_members(project)

    @extend_schema(
        request=ProjectMemberAddSerializer,
        responses={HTTPStatus.CREATED: ProjectMemberSerializer},
        summary="Add a member of the project's organization to the project",
    )
    def post(self, request: Request, uuid: str) -> Response:
        project = selectors.project_get_for_user(request.user, uuid)
        data = _valid(ProjectMemberAddSerializer, request)
        field = next(k for k in ("user", "email", "username") if data.get(k))
        user = selectors.organization_member_find(project.organization, data["login"])
        if user is None:
            raise NotOrganizationMember(
                f"No member of {project.organization} has the email or username "
                f"'{data['login']}': invite them to the organization first",
                field=field,
            )
        member = services.project_member_add(
            actor=acting_user(request), project=project, user=user, role=data["role"]
        )
        return Response(ProjectMemberSerializer(member).data, status=HTTPStatus.CREATED)


class ProjectMemberDetailView(APIView):
    @extend_schema(request=RoleSerializer, responses=ProjectMemberSerializer)
    def patch(self, request: Request, uuid: str, user_id: int) -> Response:
        member = selectors.project_member_get(request.user, uuid, user_id)
        role = _require_role(_valid(RoleSerializer, request)["role"], ProjectMember.Role.values)
        member = services.project_member_role_change(
            actor=acting_user(request), member=member, role=role
        )
        return Response(ProjectMemberSerializer(member).data)

    @extend_schema(request=None, responses={HTTPStatus.NO_CONTENT: None})
    def delete(self, request: Request, uuid: str, user_id: int) -> Response:
        member = selectors.project_member_get(request.user, uuid, user_id)
        services.project_member_remove(actor=acting_user(request), member=member)
        return Response(status=HTTPStatus.NO_CONTENT)


class ApiTokenListView(generics.ListAPIView[ApiToken]):
    serializer_class = ApiTokenSerializer

    def get_queryset(self) -> QuerySet[ApiToken]:
        return selectors.api_tokens_for_user(self.request.user)

    @extend_schema(
        request=ApiTokenCreateSerializer,
        responses={HTTPStatus.CREATED: ApiTokenCreatedSerializer},
        summary="Create an API token: the raw token is in this response only",
    )
    def post(self, request: Request) -> Response:
        token, raw = services.api_token_create(
            actor=acting_user(request), **_valid(ApiTokenCreateSerializer, request)
        )
        token.token = raw  # type: ignore[attr-defined]
        return Response(ApiTokenCreatedSerializer(token).data, status=HTTPStatus.CREATED)


class ApiTokenDetailView(APIView):
    @extend_schema(responses=ApiTokenSerializer)
    def get(self, request: Request, uuid: str) -> Response:
        return Response(
            ApiTokenSerializer(selectors.api_token_get_for_user(request.user, uuid)).data
        )

    @extend_schema(
        request=None,
        responses={HTTPStatus.NO_CONTENT: OpenApiResponse(description="Revoked")},
        summary="Revoke an API token",
    )
    def delete(self, request: Request, uuid: str) -> Response:
        token = selectors.api_token_get_for_user(request.user, uuid)
        services.api_token_revoke(actor=acting_user(request), token=token)
        return Response(status=HTTPStatus.NO_CONTENT)
