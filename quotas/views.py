"""HTML pages for clusters and rates, allocations and the grant workflow (requests, review).

Thin: a form parses, one service writes, a selector reads. Objects come from selectors scoped
to the signed-in user, so another tenant's page answers 404; domain errors from the services
become form errors or flash messages.
"""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any, TypedDict

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.selectors import can_manage_project, organization_get_for_user, projects_for_user
from portal.errors import DomainError, NotFound
from portal.ids import as_uuid
from portal.users import acting_user
from portal.web import form_error, refusal, run_action, visible
from quotas import documents, notifications, selectors, services
from quotas.exceptions import ConflictOfInterest
from quotas.forms import AllocationRequestForm, ReviewForm
from quotas.history import history_rows
from quotas.models import Allocation, AllocationRequest, Cluster
from quotas.policy import has_conflict_of_interest, is_reviewer
from quotas.services import trials

# --- clusters -------------------------------------------------------------------------------


@login_required
def cluster_list(request: HttpRequest) -> HttpResponse:
    clusters = selectors.clusters_for_user(acting_user(request))
    schedule = selectors.rate_schedule(clusters)
    rows = [
        {
            "cluster": c,
            "options": selectors.public_options(c),
            "current": [r for r in schedule.get(c.pk, []) if r.current],
            "upcoming": [r for r in schedule.get(c.pk, []) if not r.current],
            "examples": _examples(c),
        }
        for c in clusters
    ]
    return render(request, "quotas/cluster_list.html", {"rows": rows, "example": EXAMPLE_JOB})


class ExampleJob(TypedDict):
    gpus: int
    cpus: int
    memory_mb: int
    time_limit_minutes: int


# What the clusters page prices: one hour of one GPU with a typical share of CPU and memory.
EXAMPLE_JOB: ExampleJob = {"gpus": 1, "cpus": 8, "memory_mb": 64 * 1024, "time_limit_minutes": 60}


def _examples(cluster: Cluster) -> list[tuple[str, Decimal]]:
    """The estimate of EXAMPLE_JOB for each GPU type (the same estimate jobs are held at)."""
    examples = []
    for gpu_type in cluster.gpu_types or [""]:
        try:
            cost = services.estimate(cluster=cluster, gpu_type=gpu_type, **EXAMPLE_JOB)
        except DomainError:
            continue
        examples.append((gpu_type or "any GPU", cost.total))
    return examples


# --- allocations ------------------------------------------------------------------------------


@login_required
def allocation_list(request: HttpRequest) -> HttpResponse:
    allocations = selectors.allocations_for_user(request.user).filter(
        project__in=selectors.visible_projects(request.user)
    )
    show = request.GET.get("show", "current")
    if show != "all":
        allocations = allocations.exclude(status=Allocation.Status.EXPIRED)
    allocations = allocations.order_by("project__name", "ends_at", "id")
    return render(
        request, "quotas/allocation_list.html", {"allocations": allocations, "show": show}
    )


@login_required
def allocation_detail(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = visible(selectors.allocation_for_user, request.user, uuid)
    ledger = Paginator(selectors.allocation_ledger(allocation), 50).get_page(
        request.GET.get("page")
    )
    burn = selectors.burn_rates([allocation.pk])[allocation.pk]
    return render(
        request,
        "quotas/allocation_detail.html",
        {
            "allocation": allocation,
            "ledger": ledger,
            "burn": burn,
            "days_left": burn.days_left(allocation.available),
            "used_percent": services.usage_percent(allocation),
            "requests": allocation.extension_requests.order_by("-created_at"),
            "can_request": can_manage_project(request.user, allocation.project),
        },
    )


@login_required
def allocation_history(request: HttpRequest, uuid: str) -> HttpResponse:
    allocation = visible(selectors.allocation_for_user, request.user, uuid)
    return render(
        request,
        "quotas/history.html",
        {
            "object": allocation,
            "title": f"History of allocation {allocation.uuid}",
            "back": ("quotas:allocation_detail", allocation.uuid),
            "rows": history_rows(allocation),
        },
    )


# --- grant requests ---------------------------------------------------------------------------


@login_required
def allocation_request_list(request: HttpRequest) -> HttpResponse:
    requests = selectors.my_allocation_requests(request.user)
    state = request.GET.get("state", "")
    if state:
        requests = requests.filter(state=state)
    page = Paginator(requests.order_by("-created_at", "-id"), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "quotas/request_list.html",
        {
            "page": page,
            "state": state,
            "states": AllocationRequest.State.choices,
            "can_request": selectors.manageable_projects(request.user).exists(),
        },
    )


def _request_form(
    request: HttpRequest, *, instance: AllocationRequest | None = None
) -> AllocationRequestForm:
    clusters = selectors.clusters_for_user(acting_user(request))
    if instance is not None:
        clusters = list({*clusters, *instance.clusters.all()})
        initial = {
            "title": instance.title,
            "amount": instance.amount,
            "clusters": list(instance.clusters.all()),
            "start_date": instance.start_date,
            "end_date": instance.end_date,
            "justification": instance.justification,
            "funder": instance.funder,
            "award_number": instance.award_number,
        }
        return AllocationRequestForm(
            request.POST or None,
            request.FILES or None,
            projects=None,
            clusters=clusters,
            initial=initial,
        )
    manageable = selectors.manageable_projects(request.user)
    allocations = selectors.allocations_for_user(request.user).filter(project__in=manageable)
    fresh: dict[str, Any] = {}
    ident = as_uuid(request.GET.get("extends"))
    if ident is not None:
        base = allocations.filter(uuid=ident).first()
        if base is not None:
            fresh = {
                "project": base.project,
                "extends": base,
                "kind": request.GET.get("kind", AllocationRequest.Kind.RENEWAL),
                "clusters": list(base.clusters.all()),
                "start_date": base.ends_at.date(),
            }
    return AllocationRequestForm(
        request.POST or None,
        request.FILES or None,
        projects=manageable,
        clusters=clusters,
        allocations=allocations,
        initial=fresh,
    )


@login_required
@require_http_methods(["GET", "POST"])
def allocation_request_create(request: HttpRequest) -> HttpResponse:
    form = _request_form(request)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            created = services.allocation_request_create(actor=acting_user(request), **data)
            if "submit" in request.POST:
                services.allocation_request_submit(actor=acting_user(request), request=created)
        except DomainError as exc:
            form_error(form, exc)
        else:
            if "submit" in request.POST:
                messages.success(request, notifications.submitted_message(created))
            else:
                messages.success(request, "Draft saved. Submit it when it is ready.")
            return redirect("quotas:allocation_request_detail", uuid=created.uuid)
    return render(request, "quotas/request_form.html", {"form": form, "editing": None})


@login_required
@require_http_methods(["GET", "POST"])
def allocation_request_edit(request: HttpRequest, uuid: str) -> HttpResponse:
    target = visible(selectors.allocation_request_for_user, request.user, uuid)
    form = _request_form(request, instance=target)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            services.allocation_request_update(
                actor=acting_user(request),
                request=target,
                clusters=data.pop("clusters"),
                document=data.pop("document") or None,
                **data,
            )
            if "submit" in request.POST:
                services.allocation_request_submit(actor=acting_user(request), request=target)
        except DomainError as exc:
            form_error(form, exc)
        else:
            messages.success(
                request,
                notifications.submitted_message(target)
                if "submit" in request.POST
                else "Changes saved.",
            )
            return redirect("quotas:allocation_request_detail", uuid=target.uuid)
    return render(request, "quotas/request_form.html", {"form": form, "editing": target})


@login_required
def allocation_request_detail(request: HttpRequest, uuid: str) -> HttpResponse:
    target = visible(selectors.allocation_request_for_user, request.user, uuid)
    reviewer = is_reviewer(request.user) and target.requested_by_id != request.user.pk
    conflicted = reviewer and has_conflict_of_interest(request.user, target.project)
    can_edit = can_manage_project(request.user, target.project)
    review_form = ReviewForm(
        initial={
            "amount": target.amount,
            "start_date": target.start_date,
            "end_date": target.end_date,
        }
    )
    return render(
        request,
        "quotas/request_detail.html",
        {
            "req": target,
            "events": target.events.select_related("actor").order_by("created_at", "id"),
            "can_edit": can_edit and target.state in services.requests.EDITABLE_STATES,
            "can_review": reviewer
            and not conflicted
            and target.state == AllocationRequest.State.SUBMITTED,
            "conflicted": conflicted and target.state == AllocationRequest.State.SUBMITTED,
            "review_form": review_form,
        },
    )


@login_required
@require_POST
def allocation_request_submit(request: HttpRequest, uuid: str) -> HttpResponse:
    target = visible(selectors.allocation_request_for_user, request.user, uuid)
    try:
        services.allocation_request_submit(actor=acting_user(request), request=target)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, notifications.submitted_message(target))
    return redirect("quotas:allocation_request_detail", uuid=target.uuid)


@login_required
@require_POST
def allocation_request_review(request: HttpRequest, uuid: str) -> HttpResponse:
    target = visible(selectors.allocation_request_for_user, request.user, uuid)
    if not is_reviewer(request.user):
        raise PermissionDenied("Only allocation reviewers may review requests")
    form = ReviewForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(str(e) for e in errors)}")
        return redirect("quotas:allocation_request_detail", uuid=target.uuid)
    data = form.cleaned_data
    action = data["action"]
    user = acting_user(request)
    decisions = {
        "approve": (
            lambda: services.allocation_request_approve(
                actor=user,
                request=target,
                amount=data["amount"],
                start_date=data["start_date"],
                end_date=data["end_date"],
                comment=data["comment"],
            ),
            "Approved: the allocation is credited and the requester notified.",
        ),
        "reject": (
            lambda: services.allocation_request_reject(
                actor=user, request=target, comment=data["comment"]
            ),
            "Rejected: the requester has been notified.",
        ),
        "request_changes": (
            lambda: services.allocation_request_request_changes(
                actor=user, request=target, comment=data["comment"]
            ),
            "Sent back for changes: the requester has been notified.",
        ),
    }
    decide, success = decisions[action]
    try:
        done = run_action(request, decide, success, propagate=(ConflictOfInterest,))
    except ConflictOfInterest as exc:
        back = reverse("quotas:allocation_request_detail", kwargs={"uuid": target.uuid})
        return refusal(request, exc, back=back)
    if done:
        return redirect("quotas:allocation_review_queue")
    return redirect("quotas:allocation_request_detail", uuid=target.uuid)


def allocation_request_document(request: HttpRequest, uuid: str) -> FileResponse:
    """The request's document, streamed to those who may see the request; anyone else
    (signed in or not) gets the same 404 as for a request that does not exist."""
    target = visible(selectors.allocation_request_for_user, request.user, uuid)
    return visible(documents.document_response, target)


@login_required
def allocation_request_history(request: HttpRequest, uuid: str) -> HttpResponse:
    target = visible(selectors.allocation_request_for_user, request.user, uuid)
    return render(
        request,
        "quotas/history.html",
        {
            "object": target,
            "title": f"History of request “{target.title}”",
            "back": ("quotas:allocation_request_detail", target.uuid),
            "rows": history_rows(target, exclude=("updated_at",)),
        },
    )


@login_required
def allocation_review_queue(request: HttpRequest) -> HttpResponse:
    if not is_reviewer(request.user):
        raise Http404("Not a reviewer")
    state = request.GET.get("state") or AllocationRequest.State.SUBMITTED
    queue = selectors.review_queue(request.user, state=state)
    if state != AllocationRequest.State.SUBMITTED:
        queue = queue.order_by("-updated_at", "-id")
    page = Paginator(queue, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "quotas/review_queue.html",
        {
            "page": page,
            "state": state,
            "states": [
                s for s in AllocationRequest.State.choices if s[0] != AllocationRequest.State.DRAFT
            ],
        },
    )


# --- self-serve trial -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def trial_start(request: HttpRequest, uuid: str) -> HttpResponse:
    """What the trial gives and, for those who may start it, the button (or why not)."""
    organization = visible(organization_get_for_user, request.user, uuid)
    projects = list(
        projects_for_user(request.user).filter(organization=organization, is_active=True)
    )
    error = ""
    if request.method == "POST":
        project = None
        if chosen := request.POST.get("project"):
            project = next((p for p in projects if str(p.uuid) == chosen), None)
            if project is None:
                raise Http404("Project not found")
        try:
            allocation = trials.trial_start(
                actor=acting_user(request), organization=organization, project=project
            )
        except DomainError as exc:
            if exc.status == 404:
                raise Http404(exc.detail) from None
            error = exc.detail
        else:
            messages.success(
                request,
                f"Trial started: {allocation.credited.normalize():f} SU for "
                f"{allocation.project.name} until {allocation.ends_at:%Y-%m-%d}.",
            )
            return redirect("quotas:allocation_detail", uuid=allocation.uuid)
    return render(
        request,
        "quotas/trial_start.html",
        {
            "organization": organization,
            "projects": projects,
            "amount": trials.trial_amount(),
            "days": settings.GPUC_TRIAL_DAYS,
            "refusal": error
            or trials.trial_refusal(actor=acting_user(request), organization=organization),
        },
        status=HTTPStatus.CONFLICT if error else HTTPStatus.OK,
    )
