"""Who left a project: apps above accounts react to departures without accounts importing them.

    from accounts.departures import register_departure_callback
    register_departure_callback(my_callback)  # e.g. in JobsConfig.ready()

A callback takes the id of a user who was removed from one or more projects (project member
removed, or organization membership removed). Callbacks run after the removing transaction
commits, never inside it, and a failing callback never undoes the removal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

DepartureCallback = Callable[[int], None]
_callbacks: list[DepartureCallback] = []
logger = logging.getLogger(__name__)


def register_departure_callback(callback: DepartureCallback) -> None:
    """Call `callback(user_id)` after each removal of a user from a project (idempotent)."""
    if callback not in _callbacks:
        _callbacks.append(callback)


def unregister_departure_callback(callback: DepartureCallback) -> None:
    if callback in _callbacks:
        _callbacks.remove(callback)


def member_departed(user_id: int) -> None:
    """Tell every registered callback, once the current transaction commits."""

    def run() -> None:
        for callback in list(_callbacks):
            try:
                callback(user_id)
            except Exception:  # the removal has committed: report, never undo it
                logger.exception("Departure callback %r failed for user %s", callback, user_id)

    transaction.on_commit(run)
