"""The grant workflow: draft -> submitted -> (changes_requested <-> submitted) -> approved |
rejected. Every transition is an AllocationRequestEvent and an email to the requester; approval
creates (or, for a supplement, credits) the allocation in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from accounts.models import Project, User
from accounts.selectors import can_manage_project
from quotas import notifications
from quotas.documents import DOCUMENT_EXTENSIONS, DOCUMENT_MAX_BYTES, display_name
from quotas.exceptions import (
    AllocationStateError,
    ConflictOfInterest,
    InvalidRequest,
    NotProjectManager,
    NotReviewer,
    RequestStateError,
    SelfReview,
)
from quotas.models import Allocation, AllocationRequest, AllocationRequestEvent, Cluster
from quotas.policy import has_conflict_of_interest, is_reviewer
from quotas.services.allocations import check_clusters
from quotas.services.ledger import ledger_credit
from quotas.services.ledger.amounts import positive_amount
from quotas.services.ledger.posting import lock_allocation

State = AllocationRequest.State
EDITABLE_STATES = (State.DRAFT, State.CHANGES_REQUESTED)
_FIELDS = ("title", "amount", "start_date", "end_date", "justification", "funder", "award_number")


def allocation_window(start_date: date, end_date: date) -> tuple[datetime, datetime]:
    """A request's dates as the allocation's instants: from the start of `start_date` to the
    end of `end_date` (both inclusive days, UTC)."""
    return (
        datetime.combine(start_date, time.min, tzinfo=UTC),
        datetime.combine(end_date + timedelta(days=1), time.min, tzinfo=UTC),
    )


def _check_dates(start_date: date, end_date: date) -> None:
    if not isinstance(start_date, date) or not isinstance(end_date, date):
        raise InvalidRequest("start_date and end_date must be dates", field="start_date")
    if end_date <= start_date:
        raise InvalidRequest("end_date must be after start_date", field="end_date")


def _check_document(document: UploadedFile[bytes] | None) -> None:
    if document is None:
        return
    name = display_name(document.name or "").lower()
    if not name.endswith(DOCUMENT_EXTENSIONS):
        raise InvalidRequest(
            f"The document must be one of {', '.join(DOCUMENT_EXTENSIONS)}", field="document"
        )
    if document.size is not None and document.size > DOCUMENT_MAX_BYTES:
        raise InvalidRequest("The document must be at most 10 MB", field="document")


def _check_extends(*, project: Project, kind: str, extends: Allocation | None) -> None:
    if kind not in AllocationRequest.Kind.values:
        raise InvalidRequest(
            f"kind must be one of {', '.join(AllocationRequest.Kind.values)}", field="kind"
        )
    if kind == AllocationRequest.Kind.NEW:
        if extends is not None:
            raise InvalidRequest("A new request extends no allocation", field="extends")
        return
    if extends is None:
        raise InvalidRequest(
            f"A {kind} request must name the allocation it extends", field="extends"
        )
    if extends.project_id != project.pk:
        raise InvalidRequest("The extended allocation belongs to another project", field="extends")
    if kind == AllocationRequest.Kind.SUPPLEMENT and extends.status == Allocation.Status.EXPIRED:
        raise AllocationStateError(
            "A supplement cannot add to an expired allocation: request a renewal instead",
            state=extends.status,
            field="extends",
        )


def _record(
    request: AllocationRequest,
    *,
    actor: User,
    to_state: str,
    comment: str = "",
    changes: dict[str, list[str]] | None = None,
    notify: bool = True,
) -> AllocationRequestEvent:
    from_state = request.state if request.pk else ""
    event = AllocationRequestEvent.objects.create(
        request=request,
        actor=actor,
        from_state=from_state if from_state != to_state else "",
        to_state=to_state,
        comment=comment,
        changes=changes or {},
    )
    if notify:
        notifications.request_transition(request=request, event=event)
    return event


def _save(request: AllocationRequest, actor: User, fields: list[str] | None = None) -> None:
    request._history_user = actor
    request.save(update_fields=[*fields, "updated_at"] if fields else None)


def _require_manager(actor: User, project: Project) -> None:
    if not can_manage_project(actor, project):
        raise NotProjectManager(
            f"Only the PI or a manager of project '{project.name}' may request allocations"
        )


@transaction.atomic
def allocation_request_create(
    *,
    actor: User,
    project: Project,
    title: str,
    amount: Decimal | str,
    clusters: Iterable[Cluster],
    start_date: date,
    end_date: date,
    justification: str,
    kind: str = AllocationRequest.Kind.NEW,
    extends: Allocation | None = None,
    funder: str = "",
    award_number: str = "",
    document: UploadedFile[bytes] | None = None,
) -> AllocationRequest:
    """Draft a request for `project` (its PI or a manager); nothing is sent until submitted."""
    _require_manager(actor, project)
    value = positive_amount(amount)
    _check_dates(start_date, end_date)
    chosen = check_clusters(project=project, clusters=clusters)
    _check_extends(project=project, kind=kind, extends=extends)
    _check_document(document)
    if not title.strip():
        raise InvalidRequest("A title is required", field="title")
    if not justification.strip():
        raise InvalidRequest("A justification is required", field="justification")
    request = AllocationRequest(
        project=project,
        kind=kind,
        extends=extends,
        title=title.strip(),
        amount=value,
        start_date=start_date,
        end_date=end_date,
        justification=justification,
        funder=funder.strip(),
        award_number=award_number.strip(),
        requested_by=actor,
    )
    if document is not None:
        request.document = document
        request.document_name = display_name(document.name or "")
    _save(request, actor)
    request.clusters.set(chosen)
    _record(request, actor=actor, to_state=State.DRAFT, comment="Drafted", notify=False)
    return request


def _locked_request(request: AllocationRequest) -> AllocationRequest:
    return (
        AllocationRequest.objects.select_for_update(of=("self",))
        .select_related("project__organization", "requested_by", "extends")
        .get(pk=request.pk)
    )


def _refresh(target: AllocationRequest, source: AllocationRequest) -> None:
    for name in (*_FIELDS, "state", "allocation_id", "updated_at", "document", "document_name"):
        setattr(target, name, getattr(source, name))


@transaction.atomic
def allocation_request_update(
    *,
    actor: User,
    request: AllocationRequest,
    clusters: Iterable[Cluster] | None = None,
    document: UploadedFile[bytes] | None = None,
    **fields: Any,
) -> AllocationRequest:
    """Edit a draft or a request sent back for changes (title, amount, dates, clusters, ...)."""
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", field=min(unknown))
    locked = _locked_request(request)
    _require_manager(actor, locked.project)
    if locked.state not in EDITABLE_STATES:
        raise RequestStateError(
            f"Request is {locked.state}: only drafts and requests sent back can be edited",
            state=locked.state,
        )
    if "amount" in fields:
        fields["amount"] = positive_amount(fields["amount"])
    for name in ("title", "justification"):
        if name in fields and not str(fields[name]).strip():
            raise InvalidRequest(f"A {name} is required", field=name)
    for name, value in fields.items():
        setattr(locked, name, value.strip() if isinstance(value, str) else value)
    _check_dates(locked.start_date, locked.end_date)
    _check_document(document)
    if document is not None:
        locked.document = document
        locked.document_name = display_name(document.name or "")
    if clusters is not None:
        locked.clusters.set(check_clusters(project=locked.project, clusters=clusters))
    _save(locked, actor)
    _refresh(request, locked)
    return locked


@transaction.atomic
def allocation_request_submit(*, actor: User, request: AllocationRequest) -> AllocationRequest:
    """Send a draft (or a request sent back) to the reviewers; emails them and the requester."""
    locked = _locked_request(request)
    _require_manager(actor, locked.project)
    if locked.state not in EDITABLE_STATES:
        raise RequestStateError(
            f"Request is {locked.state}: only a draft or a request sent back can be submitted",
            state=locked.state,
        )
    check_clusters(project=locked.project, clusters=locked.clusters.all())
    if locked.extends is not None:
        _check_extends(project=locked.project, kind=locked.kind, extends=locked.extends)
    _record(locked, actor=actor, to_state=State.SUBMITTED)
    locked.state = State.SUBMITTED
    _save(locked, actor, ["state"])
    _refresh(request, locked)
    return locked


def _require_reviewer(actor: User, request: AllocationRequest) -> None:
    if not is_reviewer(actor):
        raise NotReviewer("Only allocation reviewers may review requests")
    if request.requested_by_id == actor.pk:
        raise SelfReview("Reviewers cannot review their own requests")
    project = request.project
    if has_conflict_of_interest(actor, project):
        raise ConflictOfInterest(
            f"Conflict of interest: you belong to organization '{project.organization.name}' "
            f"or project '{project.name}', so another reviewer must decide this request"
        )


def _require_submitted(request: AllocationRequest, action: str) -> None:
    if request.state != State.SUBMITTED:
        raise RequestStateError(
            f"Cannot {action} a request that is {request.state}: only submitted requests can be "
            f"reviewed",
            state=request.state,
        )


@transaction.atomic
def allocation_request_approve(
    *,
    actor: User,
    request: AllocationRequest,
    amount: Decimal | str | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    comment: str = "",
) -> AllocationRequest:
    """Approve a submitted request, possibly for a different amount or dates.

    A new or renewal request creates a grant allocation credited with the amount; a supplement
    credits the allocation it extends (and moves its end later if the approved end is later).
    """
    _require_reviewer(actor, request)
    locked = _locked_request(request)
    _require_submitted(locked, "approve")
    changes: dict[str, list[str]] = {}
    if amount is not None:
        value = positive_amount(amount)
        if value != locked.amount:
            changes["amount"] = [str(locked.amount), str(value)]
            locked.amount = value
    for name, new in (("start_date", start_date), ("end_date", end_date)):
        if new is not None and new != getattr(locked, name):
            changes[name] = [str(getattr(locked, name)), str(new)]
            setattr(locked, name, new)
    _check_dates(locked.start_date, locked.end_date)
    clusters = check_clusters(project=locked.project, clusters=locked.clusters.all())
    starts_at, ends_at = allocation_window(locked.start_date, locked.end_date)
    if ends_at <= timezone.now():
        raise InvalidRequest("end_date is in the past: choose a later end", field="end_date")
    key = f"request:{locked.uuid}:credit"
    memo = f"Grant request '{locked.title}'"
    if locked.kind == AllocationRequest.Kind.SUPPLEMENT and locked.extends is not None:
        _apply_supplement(
            actor, locked.extends, request=locked, clusters=clusters, ends_at=ends_at, key=key
        )
    else:
        allocation = Allocation(
            project=locked.project,
            kind=Allocation.Kind.GRANT,
            starts_at=starts_at,
            ends_at=ends_at,
            memo=memo[:500],
        )
        allocation._history_user = actor
        allocation.save()
        allocation.clusters.set(clusters)
        ledger_credit(actor=actor, allocation=allocation, amount=locked.amount, key=key, memo=memo)
        locked.allocation = allocation
    _record(locked, actor=actor, to_state=State.APPROVED, comment=comment, changes=changes)
    locked.state = State.APPROVED
    _save(locked, actor)
    _refresh(request, locked)
    return locked


def _apply_supplement(
    actor: User,
    extends: Allocation,
    *,
    request: AllocationRequest,
    clusters: list[Cluster],
    ends_at: datetime,
    key: str,
) -> None:
    target = lock_allocation(extends)
    _check_extends(project=request.project, kind=request.kind, extends=target)
    if ends_at > target.ends_at:
        target.ends_at = ends_at
        target.notified = [n for n in target.notified if not n.startswith("expiry-")]
        target._history_user = actor
        target.save(update_fields=["ends_at", "notified"])
    target.clusters.add(*clusters)
    memo = f"Supplement request '{request.title}'"
    ledger_credit(actor=actor, allocation=target, amount=request.amount, key=key, memo=memo)


def _decide(
    *, actor: User, request: AllocationRequest, to_state: str, comment: str, action: str
) -> AllocationRequest:
    _require_reviewer(actor, request)
    if not comment.strip():
        raise InvalidRequest(f"A comment is required to {action}", field="comment")
    locked = _locked_request(request)
    _require_submitted(locked, action)
    _record(locked, actor=actor, to_state=to_state, comment=comment.strip())
    locked.state = to_state
    _save(locked, actor, ["state"])
    _refresh(request, locked)
    return locked


@transaction.atomic
def allocation_request_reject(
    *, actor: User, request: AllocationRequest, comment: str
) -> AllocationRequest:
    """Turn a submitted request down, with the reason (required)."""
    return _decide(
        actor=actor, request=request, to_state=State.REJECTED, comment=comment, action="reject"
    )


@transaction.atomic
def allocation_request_request_changes(
    *, actor: User, request: AllocationRequest, comment: str
) -> AllocationRequest:
    """Send a submitted request back to the requester with what to change (required)."""
    return _decide(
        actor=actor,
        request=request,
        to_state=State.CHANGES_REQUESTED,
        comment=comment,
        action="request changes to",
    )
