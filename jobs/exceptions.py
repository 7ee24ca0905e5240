"""Domain errors of jobs: the API exception handler turns them into {"detail", "code"}."""

from __future__ import annotations

from http import HTTPStatus

from portal.errors import Conflict, DomainError, NotFound


class InvalidJob(DomainError):
    """A submission (or a log/result request) is malformed; `field` names the culprit."""

    code = "invalid"


class ClusterNotUsable(DomainError):
    """The cluster is disabled, unknown to the project or has no account for the user."""

    code = "cluster_not_usable"


class JobNotFound(NotFound):
    code = "not_found"


class JobStateError(Conflict):
    """The job is not in a state that allows this action (e.g. cancelling a finished job)."""

    code = "job_state"


class ResultNotFound(NotFound):
    code = "result_not_found"


class ClusterUnavailable(DomainError):
    """The cluster's scheduler did not answer: try again later."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "cluster_unavailable"


class InvalidAccountSetting(DomainError):
    """A project account setting (name, GPU cap) the scheduler would refuse; nothing pushed."""

    code = "invalid"
