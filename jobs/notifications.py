"""Emails about cluster access requests, sent after the current transaction commits (never
from inside it); a mail failure never undoes a write."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.template.loader import render_to_string

from accounts.models import User
from portal import mail
from quotas.policy import FACILITY_ADMINS_GROUP

if TYPE_CHECKING:
    from jobs.models import ClusterAccessRequest, Job

logger = logging.getLogger(__name__)


def _url(name: str) -> str:
    return mail.url_for(name)


def _send_on_commit(template: str, request: ClusterAccessRequest, to: list[str]) -> None:
    to = sorted({address for address in to if address})
    if not to:
        return
    context = {
        "request": request,
        "cluster": request.cluster.name,
        "project": request.project.name,
        "access_url": _url("access-list"),
        "manage_url": _url("access-manage"),
        **mail.context(),
    }
    subject = render_to_string(f"jobs/email/{template}_subject.txt", context).strip()
    message = EmailMessage(
        subject=mail.subject(subject),
        body=render_to_string(f"jobs/email/{template}_message.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
    )

    def send() -> None:
        try:
            get_connection().send_messages([message])
        except Exception:  # the write has committed: a mail outage must not undo it
            logger.exception(
                "Could not send the %s email for access request %s", template, request.uuid
            )

    transaction.on_commit(send)


def notify_requester(request: ClusterAccessRequest) -> None:
    """Tell the requester where their request stands (received, provisioned, rejected,
    failed, revoked)."""
    _send_on_commit(f"access_{request.state}", request, [request.user.email])


def notify_staff(request: ClusterAccessRequest) -> None:
    """Tell the facility admins that a request waits for them."""
    admins = User.objects.filter(is_active=True).exclude(email="")
    emails = admins.filter(groups__name=FACILITY_ADMINS_GROUP).values_list("email", flat=True)
    staff = admins.filter(is_staff=True).values_list("email", flat=True)
    _send_on_commit("access_staff_pending", request, [*emails, *staff])


def notify_session_stopped_idle(job: Job, *, idle_minutes: int) -> None:
    """Tell a session's owner it was stopped for being idle (after commit)."""
    if job.user is None or not job.user.email:
        return
    context = {
        "job": job,
        "user": job.user,
        "idle_minutes": idle_minutes,
        "job_url": _url_args("job-detail", job_uuid=job.uuid),
        **mail.context(),
    }
    subject = render_to_string("jobs/email/session_idle_subject.txt", context).strip()
    message = EmailMessage(
        subject=mail.subject(subject),
        body=render_to_string("jobs/email/session_idle_message.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[job.user.email],
    )

    def send() -> None:
        try:
            get_connection().send_messages([message])
        except Exception:  # the stop has happened: a mail outage must not undo it
            logger.exception("Could not send the idle-stop email for session %s", job.uuid)

    transaction.on_commit(send)


def _url_args(name: str, **kwargs: object) -> str:
    return mail.url_for(name, **kwargs)
