"""The root of every domain error: one exception handler turns them into clear 4xx answers."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class DomainError(Exception):
    """A rule of the domain was broken by the request; safe to show to the caller."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    code: str = "invalid"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, "code": self.code}
        if self.field:
            body["field"] = self.field
        body.update(
            {
                k: str(v) if not isinstance(v, (int, list, dict)) else v
                for k, v in self.extra.items()
            }
        )
        return body


class NotFound(DomainError):
    status = HTTPStatus.NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status = HTTPStatus.CONFLICT
    code = "conflict"


class TooLarge(DomainError):
    """The request would store more than a limit allows (a file's size, a quota): 413."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


class PermissionDenied(DomainError):
    status = HTTPStatus.FORBIDDEN
    code = "permission_denied"
