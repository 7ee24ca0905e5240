"""Django admin for facility staff. Token and invitation secrets are hashes and stay read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMember,
    User,
)
from accounts.token_cache import forget_tokens, forget_user_tokens


@admin.register(User)
class UserAdmin(DjangoUserAdmin[User]):
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "is_active")

    # API tokens are cached with their user for a few seconds (accounts.token_cache): a change
    # made here (deactivation above all) must reach the API at once.
    def save_model(
        self, request: HttpRequest, obj: User, form: forms.ModelForm[User], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if change:
            forget_user_tokens(obj.pk)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        forget_user_tokens(obj.pk)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user_id in queryset.values_list("pk", flat=True):
            forget_user_tokens(user_id)
        super().delete_queryset(request, queryset)


class MembershipInline(admin.TabularInline[Membership, Organization]):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


class ProjectMemberInline(admin.TabularInline[ProjectMember, Project]):
    model = ProjectMember
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ("name", "slug", "kind", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "slug")
    readonly_fields = ("uuid", "created_at")
    inlines = [MembershipInline]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    list_display = ("name", "slug", "organization", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "organization__name")
    list_select_related = ("organization",)
    readonly_fields = ("uuid", "created_at")
    inlines = [ProjectMemberInline]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin[Invitation]):
    list_display = ("email", "organization", "project", "org_role", "expires_at", "accepted_at")
    search_fields = ("email", "organization__name")
    list_select_related = ("organization", "project")
    readonly_fields = (
        "uuid",
        "token_hash",
        "invited_by",
        "created_at",
        "accepted_at",
        "accepted_by",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # invitations are sent from the organization page (the link is emailed)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    list_display = ("name", "user", "prefix", "scope", "created_at", "expires_at", "revoked_at")
    list_filter = ("scope",)
    search_fields = ("name", "prefix", "user__username", "user__email")
    list_select_related = ("user",)
    readonly_fields = ("uuid", "user", "prefix", "token_hash", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are created by their owner, who alone sees the raw value

    # Revoked, re-dated or deleted here: the API's cached entry goes at once.
    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm[ApiToken], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        forget_tokens([obj.token_hash])

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        forget_tokens([obj.token_hash])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        forget_tokens(queryset.values_list("token_hash", flat=True))
        super().delete_queryset(request, queryset)
