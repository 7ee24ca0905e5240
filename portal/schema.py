"""The OpenAPI schema tells the truth about errors: every operation documents the error answers
it can give, all in the one shape the exception handler writes (see portal.api)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

# Every error of the API: {"detail", "code"}, plus `field` and `errors` for a validation error
# and, for some codes, facts such as the shortfall. Built with inline_serializer: a field named
# `errors` would shadow Serializer.errors on a declared class.
ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(help_text="What went wrong, in words."),
        "code": serializers.CharField(
            help_text="A stable machine-readable code, e.g. `invalid`, `not_found`, "
            "`insufficient_quota`."
        ),
        "field": serializers.CharField(
            required=False, help_text="The request field at fault, when there is one."
        ),
        "errors": serializers.JSONField(
            required=False, help_text="Every validation error, by field (validation errors only)."
        ),
    },
)


# Every operation: a malformed request (a NUL character, bad JSON, an invalid filter), no or a
# bad token, a role or token scope that does not allow it, and the rate limit.
COMMON_ERRORS = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.UNAUTHORIZED,
    HTTPStatus.FORBIDDEN,
    HTTPStatus.TOO_MANY_REQUESTS,
)

# Error answers beyond the common ones and 404 (any operation with a path parameter), by
# operation id. A test (tests/test_schemathesis.py) fails on any status not documented here.
EXTRA_ERRORS: dict[str, tuple[HTTPStatus, ...]] = {
    # A filter naming a project that is not the caller's.
    "v1_jobs_list": (HTTPStatus.NOT_FOUND,),
    "v1_allocations_list": (HTTPStatus.NOT_FOUND,),
    "v1_allocation_requests_list": (HTTPStatus.NOT_FOUND,),
    # Submitting: the quota falls short (or its allocation is suspended), or the allocation
    # changed state under the hold.
    "v1_jobs_create": (HTTPStatus.PAYMENT_REQUIRED, HTTPStatus.CONFLICT),
    "v1_jobs_batch_create": (HTTPStatus.PAYMENT_REQUIRED, HTTPStatus.CONFLICT),
    "v1_jobs_cancel_create": (HTTPStatus.CONFLICT, HTTPStatus.SERVICE_UNAVAILABLE),
    # Logs and results are read from the cluster, which may not answer.
    "v1_jobs_log_retrieve": (HTTPStatus.SERVICE_UNAVAILABLE,),
    "v1_jobs_results_list": (HTTPStatus.SERVICE_UNAVAILABLE,),
    "v1_jobs_results_download": (HTTPStatus.SERVICE_UNAVAILABLE,),
    # Project storage: beyond the per-file limit or the project's quota; results read from
    # the cluster, which may not answer.
    "v1_projects_files_upload_create": (HTTPStatus.REQUEST_ENTITY_TOO_LARGE,),
    "v1_projects_files_copy_results_create": (
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        HTTPStatus.SERVICE_UNAVAILABLE,
    ),
    # The grant workflow: a request in the wrong state for the step.
    "v1_allocation_requests_create": (HTTPStatus.NOT_FOUND,),
    "v1_allocation_requests_partial_update": (HTTPStatus.CONFLICT,),
    "v1_allocation_requests_submit_create": (HTTPStatus.CONFLICT,),
    "v1_allocation_requests_approve_create": (HTTPStatus.CONFLICT,),
    "v1_allocation_requests_reject_create": (HTTPStatus.CONFLICT,),
    "v1_allocation_requests_request_changes_create": (HTTPStatus.CONFLICT,),
    # Tenancy: a slug taken, already a member, the last owner or PI, an unknown or used
    # invitation.
    "v1_organizations_create": (HTTPStatus.CONFLICT,),
    "v1_projects_create": (HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    "v1_projects_members_create": (HTTPStatus.CONFLICT,),
    "v1_projects_members_partial_update": (HTTPStatus.CONFLICT,),
    "v1_projects_members_destroy": (HTTPStatus.CONFLICT,),
    "v1_organizations_members_partial_update": (HTTPStatus.CONFLICT,),
    "v1_organizations_members_destroy": (HTTPStatus.CONFLICT,),
    "v1_organizations_invitations_create": (HTTPStatus.CONFLICT,),
    "v1_invitations_accept_create": (HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT, HTTPStatus.GONE),
    # The organization already had its one trial.
    "v1_organizations_trial_create": (HTTPStatus.CONFLICT,),
    # Billing: the project is not one the caller pays for, Stripe is off or does not answer.
    "v1_billing_checkout_create": (
        HTTPStatus.NOT_FOUND,
        HTTPStatus.BAD_GATEWAY,
        HTTPStatus.SERVICE_UNAVAILABLE,
    ),
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, adding each operation's error answers (ErrorSerializer)."""

    def error_statuses(self) -> list[HTTPStatus]:
        statuses = set(COMMON_ERRORS) | set(EXTRA_ERRORS.get(self.get_operation_id(), ()))
        if "{" in self.path:  # an object named in the path may not exist or not be visible
            statuses.add(HTTPStatus.NOT_FOUND)
        return sorted(statuses)

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if not self.path.startswith("/api/v1/"):
            return responses
        for status in self.error_statuses():
            # Unannotated in drf-spectacular, and called on self: untyped_calls_exclude
            # cannot see that it is theirs.
            response = self._get_response_for_code(  # type: ignore[no-untyped-call]
                ErrorSerializer, str(int(status))
            )
            response["description"] = status.phrase
            responses.setdefault(str(int(status)), response)
        return responses
