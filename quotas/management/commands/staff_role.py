"""`manage.py staff_role USER ROLE... [--remove]`: make a person an allocation reviewer or a
facility admin (or take it back); with no role, print the roles they have."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.errors import DomainError
from quotas.services import (
    STAFF_ROLES,
    staff_roles_grant,
    staff_roles_of,
    staff_roles_revoke,
    staff_user_find,
)


class Command(BaseCommand):
    help = (
        "Give a user (username or email) staff roles: 'reviewer' (approves grant requests) "
        "and/or 'facility-admin' (the /manage/ area: quotas, jobs, cluster access). "
        "--remove takes them back. With no role, print the user's roles."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="username or email address")
        parser.add_argument("roles", nargs="*", metavar="role", help=" or ".join(STAFF_ROLES))
        parser.add_argument("--remove", action="store_true", help="take the roles away")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = staff_user_find(identifier=options["user"])
            if not options["roles"]:
                roles = staff_roles_of(user=user)
            elif options["remove"]:
                roles = staff_roles_revoke(actor=None, user=user, roles=options["roles"])
            else:
                roles = staff_roles_grant(actor=None, user=user, roles=options["roles"])
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"{user.username}: {', '.join(roles) or 'no staff role'}")
