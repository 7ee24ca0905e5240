"""Domain errors of accounts and tenancy; the API handler and the HTML views turn them into 4xx."""

from __future__ import annotations

from http import HTTPStatus

from portal.errors import Conflict, DomainError, PermissionDenied


class NotAllowed(PermissionDenied):
    """The caller can see the object but their role does not allow this change."""

    code = "role_required"


class LastOwner(Conflict):
    """An organization must keep at least one owner."""

    code = "last_owner"


class LastPI(Conflict):
    """A project must keep at least one PI."""

    code = "last_pi"


class AlreadyMember(Conflict):
    code = "already_member"


class SlugTaken(Conflict):
    code = "slug_taken"


class NotOrganizationMember(DomainError):
    """Only members of a project's organization can join the project."""

    code = "not_organization_member"


class InvitationUnusable(DomainError):
    """The invitation was accepted, revoked or has expired."""

    status = HTTPStatus.GONE
    code = "invitation_unusable"


class InvitationEmailMismatch(PermissionDenied):
    """The signed-in user has no verified email matching the invitation."""

    code = "invitation_email_mismatch"


class InvalidExpiry(DomainError):
    code = "invalid_expiry"
