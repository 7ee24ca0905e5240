"""Who is staff: making a person an allocation reviewer or a facility admin (the two groups
of quotas.policy), and taking it back. Called by `manage.py staff_role`."""

from __future__ import annotations

import logging

from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Q

from accounts.models import User
from portal.errors import DomainError, NotFound
from quotas.policy import FACILITY_ADMINS_GROUP, REVIEWERS_GROUP

logger = logging.getLogger(__name__)

# The role names people type, and the group each one is.
STAFF_ROLES = {"reviewer": REVIEWERS_GROUP, "facility-admin": FACILITY_ADMINS_GROUP}


def staff_user_find(*, identifier: str) -> User:
    """The one user whose username or email (case-insensitive) is `identifier`, or NotFound."""
    identifier = identifier.strip()
    matches = list(User.objects.filter(Q(username=identifier) | Q(email__iexact=identifier))[:2])
    if len(matches) != 1:
        raise NotFound(
            f"No user with username or email '{identifier}'"
            if not matches
            else f"'{identifier}' matches more than one user; give the username"
        )
    return matches[0]


def _groups(roles: list[str]) -> list[Group]:
    unknown = [r for r in roles if r not in STAFF_ROLES]
    if unknown or not roles:
        raise DomainError(
            f"Unknown role {', '.join(repr(r) for r in unknown) or '(none given)'}: "
            f"choose from {', '.join(STAFF_ROLES)}",
            field="role",
        )
    return [Group.objects.get_or_create(name=STAFF_ROLES[r])[0] for r in roles]


@transaction.atomic
def staff_roles_grant(*, actor: User | None, user: User, roles: list[str]) -> list[str]:
    """Add `user` to the groups of `roles` ("reviewer", "facility-admin"); idempotent.
    Returns the user's staff roles afterwards."""
    user.groups.add(*_groups(roles))
    logger.info("%s granted %s to %s", actor or "manage.py", roles, user.username)
    return staff_roles_of(user=user)


@transaction.atomic
def staff_roles_revoke(*, actor: User | None, user: User, roles: list[str]) -> list[str]:
    """Remove `user` from the groups of `roles`; idempotent. Returns the roles left."""
    user.groups.remove(*_groups(roles))
    logger.info("%s revoked %s from %s", actor or "manage.py", roles, user.username)
    return staff_roles_of(user=user)


def staff_roles_of(*, user: User) -> list[str]:
    names = set(user.groups.values_list("name", flat=True))
    return [role for role, group in STAFF_ROLES.items() if group in names]
