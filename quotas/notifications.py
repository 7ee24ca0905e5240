"""Emails about allocations and grant requests. Every message is sent only after the current
transaction commits (never from inside it), and a mail failure never undoes a write."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction

from accounts.models import Membership, Project, ProjectMember, User
from portal import mail
from portal.formatting import format_date_range, format_su, last_day

if TYPE_CHECKING:
    from quotas.models import Allocation, AllocationRequest, AllocationRequestEvent

logger = logging.getLogger(__name__)


def _url(name: str, **kwargs: object) -> str:
    return mail.url_for(name, **kwargs)


def _send_on_commit(messages: list[EmailMessage]) -> None:
    messages = [m for m in messages if m.to]
    if not messages:
        return

    def send() -> None:
        try:
            get_connection().send_messages(messages)
        except Exception:  # a mail outage must not break the write that already committed
            logger.exception("Could not send %d quota email(s)", len(messages))

    transaction.on_commit(send)


def _message(subject: str, body: str, to: list[str]) -> EmailMessage:
    return EmailMessage(
        subject=mail.subject(subject),
        body=body.rstrip("\n") + "\n" + mail.signature(),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=sorted(set(to)),
    )


def pi_emails(project: Project) -> list[str]:
    """The project's PIs; failing those its managers; failing those the organization's owners."""
    for role in (ProjectMember.Role.PI, ProjectMember.Role.MANAGER):
        emails = list(
            ProjectMember.objects.filter(project=project, role=role, user__is_active=True)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
        if emails:
            return emails
    return list(
        Membership.objects.filter(
            organization_id=project.organization_id,
            role=Membership.Role.OWNER,
            user__is_active=True,
        )
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def reviewer_emails(project: Project | None = None) -> list[str]:
    """The reviewers' addresses; for `project`, only those without a conflict of interest."""
    from quotas.policy import REVIEWERS_GROUP, conflicted_users

    reviewers = User.objects.filter(groups__name=REVIEWERS_GROUP, is_active=True).exclude(email="")
    if project is not None:
        reviewers = reviewers.exclude(conflicted_users(project))
    return list(reviewers.values_list("email", flat=True))


def usage_threshold(*, allocation: Allocation, threshold: int, percent: Decimal) -> None:
    project = allocation.project
    body = (
        f"Project '{project.name}' has used {percent:.1f} % of allocation "
        f"{allocation.uuid} ({allocation.get_kind_display()}).\n\n"
        f"Credited: {format_su(allocation.credited)} SU\n"
        f"Charged: {format_su(allocation.charged)} SU\n"
        f"Held by running jobs: {format_su(allocation.held)} SU\n"
        f"Available: {format_su(allocation.available)} SU\n\n"
    )
    if threshold >= 100:
        body += "New jobs on this allocation will be refused until SU are added.\n"
    body += f"\nDetails: {_url('quotas:allocation_detail', uuid=allocation.uuid)}\n"
    subject = f"{project.name}: {threshold} % of an allocation used"
    _send_on_commit([_message(subject, body, pi_emails(project))])


def expiry_reminder(*, allocation: Allocation, days: int) -> None:
    project = allocation.project
    body = (
        f"Allocation {allocation.uuid} of project '{project.name}' runs through "
        f"{last_day(allocation.ends_at):%Y-%m-%d} (ends {allocation.ends_at:%Y-%m-%d %H:%M} UTC, "
        f"in {days} day{'s' if days != 1 else ''}).\n"
        f"{format_su(allocation.available)} SU are still available; whatever is unspent then "
        "expires.\n\n"
        f"To continue, request a renewal: {_url('quotas:allocation_request_create')}"
        f"?extends={allocation.uuid}&kind=renewal\n"
        f"Details: {_url('quotas:allocation_detail', uuid=allocation.uuid)}\n"
    )
    subject = f"{project.name}: an allocation expires in {days} days"
    _send_on_commit([_message(subject, body, pi_emails(project))])


def submission_recipients(request: AllocationRequest) -> list[str]:
    """The reviewers told of a submitted request: those without a conflict, not the requester."""
    return sorted(set(reviewer_emails(request.project)) - {request.requested_by.email})


def submitted_message(request: AllocationRequest) -> str:
    """What the requester is told after submitting: that reviewers were notified only when
    some were (a portal without reviewers says so instead)."""
    count = len(submission_recipients(request))
    if count:
        return (
            f"Request submitted: {count} reviewer{'s have' if count != 1 else ' has'} been "
            "notified."
        )
    return (
        "Request submitted. No reviewer could be emailed (none is set up yet): it waits in "
        "the review queue; ask the facility to name a reviewer."
    )


_TRANSITION_SUBJECTS = {
    "submitted": "submitted for review",
    "changes_requested": "changes requested",
    "approved": "approved",
    "rejected": "rejected",
}


def request_transition(*, request: AllocationRequest, event: AllocationRequestEvent) -> None:
    """Tell the requester what happened; on submission, tell the reviewers too."""
    what = _TRANSITION_SUBJECTS.get(event.to_state, event.to_state)
    link = _url("quotas:allocation_request_detail", uuid=request.uuid)
    lines = [
        f"Allocation request '{request.title}' for project '{request.project.name}' was {what}"
        f" by {event.actor}.",
        "",
        f"Amount: {format_su(request.amount)} SU, "
        f"{format_date_range(request.start_date, request.end_date)} (inclusive)",
    ]
    if event.changes:
        lines += ["", "Changed on approval:"]
        lines += [f"  {name}: {old} -> {new}" for name, (old, new) in event.changes.items()]
    if event.comment:
        lines += ["", "Comment:", event.comment]
    lines += ["", f"Details: {link}"]
    messages = [
        _message(
            f"Request '{request.title}' {what}", "\n".join(lines), [request.requested_by.email]
        )
    ]
    if event.to_state == "submitted":
        body = (
            f"{request.requested_by} submitted '{request.title}' for project "
            f"'{request.project.name}' ({request.project.organization.name}): "
            f"{format_su(request.amount)} SU, "
            f"{format_date_range(request.start_date, request.end_date)} (inclusive).\n\n"
            f"Review it: {link}\nQueue: {_url('quotas:allocation_review_queue')}\n"
        )
        subject = f"To review: '{request.title}'"
        messages += [_message(subject, body, [email]) for email in submission_recipients(request)]
    _send_on_commit(messages)
