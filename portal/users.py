"""The acting user of a request: the one helper every view and API module uses."""

from __future__ import annotations

from typing import cast

from django.http import HttpRequest
from rest_framework.request import Request

from accounts.models import User


def acting_user(request: HttpRequest | Request) -> User:
    """The signed-in user making the request, typed as our User.

    Only for views that already require a signed-in user (`login_required`, or the API's
    default IsAuthenticated permission), so `request.user` is never anonymous there.
    """
    return cast(User, request.user)
