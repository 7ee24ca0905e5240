"""HTML forms: parse and validate input; the views hand the cleaned data to one service."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import ApiToken, Membership, Organization, Project, ProjectMember


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=80, required=False, help_text="Optional: derived from the name when empty."
    )
    kind = forms.ChoiceField(choices=Organization.Kind.choices, initial=Organization.Kind.ACADEMIC)
    billing_email = forms.EmailField(required=False, help_text="Optional: invoices go here.")


class ProjectForm(forms.Form):
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(), to_field_name="uuid", empty_label=None
    )
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=80, required=False, help_text="Optional: derived from the name when empty."
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def __init__(self, *args: Any, organizations: QuerySet[Organization], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast("forms.ModelChoiceField[Organization]", self.fields["organization"])
        field.queryset = organizations


class InviteForm(forms.Form):
    email = forms.EmailField()
    org_role = forms.ChoiceField(
        label="Organization role", choices=Membership.Role.choices, initial="member"
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        to_field_name="uuid",
        required=False,
        empty_label="(no project)",
        help_text="Optional: also add them to one project.",
    )
    project_role = forms.ChoiceField(choices=ProjectMember.Role.choices, initial="member")

    def __init__(
        self, *args: Any, projects: QuerySet[Project], can_grant_owner: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        project = cast("forms.ModelChoiceField[Project]", self.fields["project"])
        project.queryset = projects
        if not can_grant_owner:
            org_role = cast(forms.ChoiceField, self.fields["org_role"])
            org_role.choices = [c for c in Membership.Role.choices if c[0] != Membership.Role.OWNER]


class OrganizationRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class ProjectRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ProjectMember.Role.choices)


class ProjectMemberAddForm(forms.Form):
    user = forms.CharField(
        label="Email or username",
        max_length=254,
        help_text="They must already be a member of the organization.",
    )
    role = forms.ChoiceField(choices=ProjectMember.Role.choices, initial="member")


class ApiTokenForm(forms.Form):
    EXPIRY_CHOICES = [("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("", "Never")]

    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “laptop CLI”.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.WRITE)
    expires_in_days = forms.ChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, initial="90", required=False
    )

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=int(days)) if days else None


class InvitationOpenForm(forms.Form):
    # The emailed link carries the code after "#", which browsers never send: the page's
    # script copies it here and posts it, so the code stays out of request lines and logs.
    token = forms.CharField(
        label="Invitation code",
        max_length=200,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
