"""HTML pages for cluster access: members ask for an account on a cluster (/access/), staff
approve or reject what waits (/manage/access/, with the staff area's own permission check:
anyone else gets a 404). Thin: parse, call one service or selector, render."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import User
from jobs import selectors, services
from jobs.models import ClusterAccessRequest, ClusterAccount
from jobs.provisioning import provisioner_path
from portal.errors import DomainError
from portal.users import acting_user
from portal.web import form_error, run_action, visible
from quotas.models import Cluster
from quotas.selectors import clusters_for_user
from quotas.staff_views import facility_admin_required


def _self_service_clusters(user: User) -> list[Cluster]:
    """Clusters open to the user's organizations that provision accounts themselves."""
    return [c for c in clusters_for_user(user) if _has_provisioner(c)]


def _has_provisioner(cluster: Cluster) -> bool:
    try:
        return provisioner_path(cluster.options) is not None
    except KeyError:
        return False


class AccessRequestForm(forms.Form):
    project = forms.ChoiceField()
    cluster = forms.ChoiceField()
    username = forms.CharField(
        required=False,
        max_length=200,
        label="User name on the cluster",
        help_text="Leave empty to use one made from your email address.",
    )
    uid = forms.IntegerField(
        required=False, label="uid number", help_text="Only if you need a particular one."
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        projects = selectors.projects_for_user(user=user).order_by("name")
        cast(forms.ChoiceField, self.fields["project"]).choices = [
            (str(p.uuid), p.name) for p in projects
        ]
        cast(forms.ChoiceField, self.fields["cluster"]).choices = [
            (c.name, str(c)) for c in _self_service_clusters(user)
        ]


@login_required
@require_http_methods(["GET", "POST"])
def access_list(request: HttpRequest) -> HttpResponse:
    """My cluster accounts and access requests, and the form to ask for another."""
    user = acting_user(request)
    initial = {k: request.GET[k] for k in ("project", "cluster") if request.GET.get(k)}
    form = AccessRequestForm(request.POST or None, user=user, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created = services.access_request_create(
                actor=user,
                project=selectors.project_for_member(user=user, value=data["project"]),
                cluster=Cluster.objects.get(name=data["cluster"]),
                username=data["username"] or "",
                uid=data["uid"],
            )
        except DomainError as exc:
            form_error(form, exc)
        else:
            if created.state == ClusterAccessRequest.State.PENDING:
                messages.success(request, "Request sent: facility staff will review it.")
            else:
                messages.success(
                    request,
                    f"Approved: your account {created.username} on {created.cluster.name} is "
                    "being created.",
                )
            return redirect("access-list")
    return render(
        request,
        "jobs/access.html",
        {
            "form": form,
            "requests": list(selectors.access_requests_for_user(user=user).filter(user=user)[:100]),
            "accounts": list(
                ClusterAccount.objects.filter(user=user)
                .select_related("cluster")
                .order_by("cluster__name")
            ),
        },
    )


@facility_admin_required
def access_manage(request: HttpRequest) -> HttpResponse:
    """The staff queue of pending access requests, and those being provisioned or failed."""
    return render(
        request,
        "jobs/access_manage.html",
        {
            "pending": list(selectors.access_requests_pending()[:500]),
            "outcomes": list(selectors.access_requests_recent_outcomes()),
        },
    )


def _target(request: HttpRequest, request_uuid: str) -> ClusterAccessRequest:
    return visible(
        lambda: selectors.access_request_get_for_user(
            user=acting_user(request), request_uuid=request_uuid
        )
    )


@facility_admin_required
@require_POST
def access_approve(request: HttpRequest, request_uuid: str) -> HttpResponse:
    target = _target(request, request_uuid)
    run_action(
        request,
        lambda: services.access_request_approve(actor=acting_user(request), request=target),
        f"Approved: {target.username} on {target.cluster.name} is being created.",
    )
    return redirect("access-manage")


@facility_admin_required
@require_POST
def access_reject(request: HttpRequest, request_uuid: str) -> HttpResponse:
    target = _target(request, request_uuid)
    run_action(
        request,
        lambda: services.access_request_reject(
            actor=acting_user(request), request=target, reason=request.POST.get("reason", "")
        ),
        f"Rejected the request of {target.user.username}.",
    )
    return redirect("access-manage")
