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


class NoClusterAccount(ClusterNotUsable):
    """The user has no account on the cluster yet: they can ask for one (cluster access)."""

    code = "no_cluster_account"


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


class InvalidAccessRequest(DomainError):
    """An access request is malformed (a bad user name or uid); `field` names the culprit."""

    code = "invalid"


class ClusterNameTaken(DomainError):
    """The cluster user name belongs to someone else (another portal user, or an identity on
    the cluster the portal did not create)."""

    code = "name_taken"


class AccessRequestNotFound(NotFound):
    code = "not_found"


class AccessRequestState(Conflict):
    """The request is not in a state that allows this action (e.g. approving it twice)."""

    code = "access_request_state"


class AlreadyHasAccount(Conflict):
    code = "already_has_account"


class InvalidAccountSetting(DomainError):
    """A project account setting (name, GPU cap) the scheduler would refuse; nothing pushed."""

    code = "invalid"


class InvalidIdleLimit(DomainError):
    """A project's session idle limit is not a whole number of minutes within the maximum."""

    code = "invalid"
