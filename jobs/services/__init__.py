"""Every write on jobs: submit (validate, estimate, hold), forward, sync, cancel, logs, results.

Scheduler calls never happen inside a database transaction: a slow or dead cluster must not
hold row locks. Forwarding is idempotent by claim (pending -> submitting) plus the portal uuid
the backend tags each job with; finalisation is exactly once by claiming finalized_at.

The package re-exports every service (and the constants and helpers that tasks and tests use)
so callers import from `jobs.services`; each use case lives in its own module: cluster_accounts
(cluster accounts), access (access requests, provisioning and revocation of cluster accounts),
submit (estimate, submit, batch submit), specs (what a backend sees of a job), forward, sync
(sync and finalisation), direct (work submitted outside the portal, found by the sync), cancel,
files (logs and results) and templates. Tasks are queued through jobs.queue only.
"""

from jobs.services.access import (
    STALE_CLAIM,
    access_request_approve,
    access_request_create,
    access_request_provision,
    access_request_reject,
    check_cluster_username,
    cluster_access_revoke_departed,
    username_candidates,
)
from jobs.services.account_names import account_name, job_account, qualified_project
from jobs.services.account_names import managed as accounts_managed
from jobs.services.cancel import job_cancel
from jobs.services.cluster_accounts import cluster_account_create
from jobs.services.direct import (
    DirectResult,
    cluster_direct_sync,
    direct_jobs_record,
    direct_key,
)
from jobs.services.files import (
    LOG_DEFAULT_LIMIT,
    LOG_MAX_LIMIT,
    STREAMS,
    clean_result_path,
    job_open_result,
    job_read_log,
    job_results,
)
from jobs.services.forward import (
    FORWARD_BATCH,
    FORWARD_THREADS,
    job_forward,
    jobs_forward_batch,
    jobs_record_forwarded,
    jobs_recover_lost_forwards,
    lost_forward_after,
)
from jobs.services.scheduler_accounts import (
    AccountsTick,
    Drift,
    accounts_create_missing,
    accounts_drift,
    accounts_sync,
    accounts_wanted,
    scheduler_account_set_cap,
)
from jobs.services.specs import backend_spec, job_ref, job_spec
from jobs.services.submit import (
    BATCH_KEY_MAX,
    BATCH_MAX,
    job_estimate,
    job_submit,
    job_submit_many,
)
from jobs.services.sync import (
    EVENT_FIELDS,
    FINALIZE_BATCH,
    MISSING_BATCH,
    SyncResult,
    cluster_sync,
)
from jobs.services.templates import job_template_create

__all__ = [
    "BATCH_KEY_MAX",
    "BATCH_MAX",
    "EVENT_FIELDS",
    "FINALIZE_BATCH",
    "FORWARD_BATCH",
    "FORWARD_THREADS",
    "LOG_DEFAULT_LIMIT",
    "LOG_MAX_LIMIT",
    "MISSING_BATCH",
    "STALE_CLAIM",
    "STREAMS",
    "AccountsTick",
    "DirectResult",
    "Drift",
    "SyncResult",
    "access_request_approve",
    "access_request_create",
    "access_request_provision",
    "access_request_reject",
    "account_name",
    "accounts_create_missing",
    "accounts_drift",
    "accounts_managed",
    "accounts_sync",
    "accounts_wanted",
    "backend_spec",
    "check_cluster_username",
    "clean_result_path",
    "cluster_access_revoke_departed",
    "cluster_account_create",
    "cluster_direct_sync",
    "cluster_sync",
    "direct_jobs_record",
    "direct_key",
    "job_account",
    "job_cancel",
    "job_estimate",
    "job_forward",
    "job_open_result",
    "job_read_log",
    "job_ref",
    "job_results",
    "job_spec",
    "job_submit",
    "job_submit_many",
    "job_template_create",
    "jobs_forward_batch",
    "jobs_record_forwarded",
    "jobs_recover_lost_forwards",
    "lost_forward_after",
    "qualified_project",
    "scheduler_account_set_cap",
    "username_candidates",
]
