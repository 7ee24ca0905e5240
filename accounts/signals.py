"""Listeners on allauth (a third-party app): the one place its events reach our services."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.http import HttpRequest

from accounts import services
from accounts.adapters import INVITATION_SESSION_KEY
from accounts.models import User
from portal.errors import DomainError

logger = logging.getLogger(__name__)

# Set once an invitation carried through sign-up was accepted: where to go next.
INVITATION_JOINED_SESSION_KEY = "accounts_invitation_joined"


def accept_invitation_on_signup(
    sender: Any, *, request: HttpRequest | None, user: User, **kwargs: Any
) -> None:
    """A person who opened an invitation and then signed up joins at once, when their new
    account holds the invited address verified; otherwise the invitation page explains."""
    if request is None or not (token := request.session.get(INVITATION_SESSION_KEY)):
        return
    try:
        invitation = services.invitation_accept(actor=user, raw_token=token)
    except DomainError as exc:
        logger.info("Invitation not accepted at sign-up of %s: %s", user.pk, exc.detail)
        return
    del request.session[INVITATION_SESSION_KEY]
    request.session[INVITATION_JOINED_SESSION_KEY] = str(invitation.uuid)
    messages.success(request, f"Welcome to {invitation.organization.name}.")
