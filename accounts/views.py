"""HTML pages for organizations, projects, members, invitations and API tokens.

Thin: a form parses, one service writes, a selector reads. Objects come from selectors
scoped to the signed-in user, so another tenant's page answers 404. Domain errors from the
services become form errors or flash messages.
"""

from __future__ import annotations

from http import HTTPStatus

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors, services
from accounts.adapters import INVITATION_SESSION_KEY
from accounts.forms import (
    ApiTokenForm,
    InvitationOpenForm,
    InviteForm,
    OrganizationForm,
    OrganizationRoleForm,
    ProjectForm,
    ProjectMemberAddForm,
    ProjectRoleForm,
)
from accounts.models import Membership, Organization, Project, ProjectMember
from accounts.project_page import project_sections
from accounts.roles import ORG_MANAGER_ROLES
from accounts.signals import INVITATION_JOINED_SESSION_KEY
from portal.errors import DomainError, NotFound
from portal.users import acting_user
from portal.web import form_error, run_action, visible

# --- organizations ----------------------------------------------------------------------


@login_required
def organization_list(request: HttpRequest) -> HttpResponse:
    organizations = selectors.organizations_for_user(request.user).order_by("name")
    return render(request, "accounts/organization_list.html", {"organizations": organizations})


@login_required
@require_http_methods(["GET", "POST"])
def organization_create(request: HttpRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = services.org_create(actor=acting_user(request), **form.cleaned_data)
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Organization {org.name} created: you are its owner.")
            return redirect("accounts:organization_detail", uuid=org.uuid)
    return render(request, "accounts/organization_form.html", {"form": form})


def _invite_form(
    request: HttpRequest, org: Organization, data: QueryDict | None = None
) -> InviteForm:
    return InviteForm(
        data,
        projects=selectors.organization_projects_for_user(request.user, org),
        can_grant_owner=org.my_role == Membership.Role.OWNER,  # type: ignore[attr-defined]
    )


def _organization_page(
    request: HttpRequest, org: Organization, invite_form: InviteForm | None = None
) -> HttpResponse:
    manager = org.my_role in ORG_MANAGER_ROLES  # type: ignore[attr-defined]
    context = {
        "org": org,
        "is_manager": manager,
        "is_owner": org.my_role == Membership.Role.OWNER,  # type: ignore[attr-defined]
        "members": selectors.organization_memberships(org),
        "projects": selectors.organization_projects_for_user(request.user, org),
        "invitations": selectors.organization_invitations_pending(org) if manager else [],
        "invite_form": invite_form or (_invite_form(request, org) if manager else None),
        "role_choices": Membership.Role.choices,
    }
    return render(request, "accounts/organization_detail.html", context)


@login_required
def organization_detail(request: HttpRequest, uuid: str) -> HttpResponse:
    org = visible(selectors.organization_get_for_user, request.user, uuid)
    return _organization_page(request, org)


@login_required
@require_POST
def organization_invite(request: HttpRequest, uuid: str) -> HttpResponse:
    org = visible(selectors.organization_get_for_user, request.user, uuid)
    form = _invite_form(request, org, request.POST)
    if form.is_valid():
        try:
            invitation, _raw = services.invitation_create(
                actor=acting_user(request), organization=org, **form.cleaned_data
            )
        except NotFound as exc:
            raise Http404(exc.detail) from None
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("accounts:organization_detail", uuid=org.uuid)
    return _organization_page(request, org, invite_form=form)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, uuid: str, invitation_uuid: str) -> HttpResponse:
    org = visible(selectors.organization_get_for_user, request.user, uuid)
    invitation = (
        selectors.organization_invitations_pending(org).filter(uuid=invitation_uuid).first()
    )
    if invitation is None:
        raise Http404("Invitation not found")
    run_action(
        request,
        lambda: services.invitation_revoke(actor=acting_user(request), invitation=invitation),
        f"Invitation of {invitation.email} revoked.",
    )
    return redirect("accounts:organization_detail", uuid=org.uuid)


@login_required
@require_POST
def organization_member_role(request: HttpRequest, uuid: str, user_id: int) -> HttpResponse:
    membership = visible(selectors.organization_member_get, request.user, uuid, user_id)
    form = OrganizationRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid role.")
    else:
        role = form.cleaned_data["role"]
        run_action(
            request,
            lambda: services.membership_role_change(
                actor=acting_user(request), membership=membership, role=role
            ),
            f"{membership.user.username} is now {Membership.Role(role).label.lower()}.",
        )
    return redirect("accounts:organization_detail", uuid=uuid)


@login_required
@require_POST
def organization_member_remove(request: HttpRequest, uuid: str, user_id: int) -> HttpResponse:
    membership = visible(selectors.organization_member_get, request.user, uuid, user_id)
    leaving = membership.user_id == request.user.pk
    done = run_action(
        request,
        lambda: services.membership_remove(actor=acting_user(request), membership=membership),
        "You left the organization." if leaving else f"{membership.user.username} removed.",
    )
    if done and leaving:
        return redirect("accounts:organization_list")
    return redirect("accounts:organization_detail", uuid=uuid)


# --- projects ---------------------------------------------------------------------------


def _manageable_organizations(request: HttpRequest) -> QuerySet[Organization]:
    return selectors.organizations_managed_by(request.user).order_by("name")


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = selectors.projects_for_user(request.user).order_by("organization__name", "name")
    return render(
        request,
        "accounts/project_list.html",
        {"projects": projects, "can_create": _manageable_organizations(request).exists()},
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    organizations = _manageable_organizations(request)
    initial = {"organization": request.GET.get("organization")} if request.method == "GET" else {}
    form = ProjectForm(request.POST or None, organizations=organizations, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            project = services.project_create(
                actor=acting_user(request), organization=data.pop("organization"), **data
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Project {project.name} created: you are its PI.")
            return redirect("accounts:project_detail", uuid=project.uuid)
    return render(
        request,
        "accounts/project_form.html",
        {"form": form, "has_organizations": organizations.exists()},
    )


def _project_page(
    request: HttpRequest, project: Project, add_form: ProjectMemberAddForm | None = None
) -> HttpResponse:
    manager = selectors.can_manage_project(request.user, project)
    context = {
        "project": project,
        "is_manager": manager,
        "members": selectors.project_members(project),
        "add_form": add_form or (ProjectMemberAddForm() if manager else None),
        "role_choices": ProjectMember.Role.choices,
        "org_role": selectors.org_role(request.user, project.organization),
        # balance, allocations and requests (quotas); recent jobs and cluster accounts (jobs)
        "sections": project_sections(request.user, project),
    }
    return render(request, "accounts/project_detail.html", context)


@login_required
def project_detail(request: HttpRequest, uuid: str) -> HttpResponse:
    project = visible(selectors.project_get_for_user, request.user, uuid)
    return _project_page(request, project)


@login_required
@require_POST
def project_member_add(request: HttpRequest, uuid: str) -> HttpResponse:
    project = visible(selectors.project_get_for_user, request.user, uuid)
    form = ProjectMemberAddForm(request.POST)
    if form.is_valid():
        user = selectors.organization_member_find(project.organization, form.cleaned_data["user"])
        if user is None:
            form.add_error(
                "user",
                f"No member of {project.organization} has that email or username: "
                "invite them to the organization first.",
            )
        else:
            try:
                services.project_member_add(
                    actor=acting_user(request),
                    project=project,
                    user=user,
                    role=form.cleaned_data["role"],
                )
            except NotFound as exc:
                raise Http404(exc.detail) from None
            except DomainError as exc:
                form.add_error("role" if exc.field == "role" else "user", exc.detail)
            else:
                messages.success(request, f"{user.username} added to {project.name}.")
                return redirect("accounts:project_detail", uuid=project.uuid)
    return _project_page(request, project, add_form=form)


@login_required
@require_POST
def project_member_role(request: HttpRequest, uuid: str, user_id: int) -> HttpResponse:
    member = visible(selectors.project_member_get, request.user, uuid, user_id)
    form = ProjectRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid role.")
    else:
        role = form.cleaned_data["role"]
        run_action(
            request,
            lambda: services.project_member_role_change(
                actor=acting_user(request), member=member, role=role
            ),
            f"{member.user.username} is now {ProjectMember.Role(role).label}.",
        )
    return redirect("accounts:project_detail", uuid=uuid)


@login_required
@require_POST
def project_member_remove(request: HttpRequest, uuid: str, user_id: int) -> HttpResponse:
    member = visible(selectors.project_member_get, request.user, uuid, user_id)
    leaving = member.user_id == request.user.pk
    done = run_action(
        request,
        lambda: services.project_member_remove(actor=acting_user(request), member=member),
        "You left the project." if leaving else f"{member.user.username} removed.",
    )
    if (
        done
        and leaving
        and not selectors.projects_for_user(request.user).filter(pk=member.project_id).exists()
    ):
        return redirect("accounts:project_list")
    return redirect("accounts:project_detail", uuid=uuid)


# --- invitations ------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def invitation_open(request: HttpRequest) -> HttpResponse:
    """Where the emailed link lands (`/invitations/#<code>`). Posting the code keeps it in this
    browser's session and goes on to the invitation, after sign-in: nothing about the
    invitation is shown to a visitor who is not signed in."""
    form = InvitationOpenForm(request.POST or None)
    status: int = HTTPStatus.OK
    if request.method == "POST":
        if form.is_valid():
            token = form.cleaned_data["token"]
            try:
                selectors.invitation_get_by_token(token)
            except NotFound as exc:
                form.add_error("token", exc.detail)
                status = HTTPStatus.NOT_FOUND
            else:
                # Signed out, sign-up carries it: see accounts.adapters and accounts.signals.
                request.session[INVITATION_SESSION_KEY] = token
                return redirect("accounts:invitation_accept")
        else:
            status = HTTPStatus.BAD_REQUEST
    return render(request, "accounts/invitation_open.html", {"form": form}, status=status)


@require_GET
def invitation_legacy_link(request: HttpRequest, token: str) -> HttpResponse:
    """A link emailed before the code moved into the fragment: open it the same way."""
    request.session[INVITATION_SESSION_KEY] = token
    return redirect("accounts:invitation_accept")


@login_required
@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest) -> HttpResponse:
    """The invitation opened in this browser's session: who is invited, and the accept button
    (or, just after a sign-up that accepted it, the organization or project joined)."""
    token = request.session.get(INVITATION_SESSION_KEY)
    if not token:
        joined = request.session.pop(INVITATION_JOINED_SESSION_KEY, None)
        if joined and (done := selectors.invitation_accepted_by(request.user, joined)):
            if done.project is not None:
                return redirect("accounts:project_detail", uuid=done.project.uuid)
            return redirect("accounts:organization_detail", uuid=done.organization.uuid)
        raise Http404("No invitation is open here: follow the link in the email again.")
    invitation = visible(selectors.invitation_get_by_token, token)
    error, status = None, int(HTTPStatus.OK)
    if request.method == "POST":
        try:
            services.invitation_accept(actor=acting_user(request), raw_token=token)
        except DomainError as exc:
            error, status = exc.detail, exc.status
        else:
            del request.session[INVITATION_SESSION_KEY]
            messages.success(request, f"Welcome to {invitation.organization.name}.")
            if invitation.project is not None:
                return redirect("accounts:project_detail", uuid=invitation.project.uuid)
            return redirect("accounts:organization_detail", uuid=invitation.organization.uuid)
    return render(
        request,
        "accounts/invitation_accept.html",
        {"invitation": invitation, "error": error},
        status=status,
    )


# --- API tokens -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        try:
            _token, new_token = services.api_token_create(
                actor=acting_user(request),
                name=form.cleaned_data["name"],
                scope=form.cleaned_data["scope"],
                expires_at=form.expires_at(),
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            # Rendered in this response only (never stored or redirected with): shown once.
            form = ApiTokenForm()
    context = {
        "form": form,
        "new_token": new_token,
        "tokens": selectors.api_tokens_for_user(request.user),
    }
    response = render(request, "accounts/api_tokens.html", context)
    if new_token:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_token_revoke(request: HttpRequest, uuid: str) -> HttpResponse:
    token = visible(selectors.api_token_get_for_user, request.user, uuid)
    run_action(
        request,
        lambda: services.api_token_revoke(actor=acting_user(request), token=token),
        f"Token {token.name} revoked.",
    )
    return redirect("accounts:api_tokens")
