"""Every write on jobs: submit (validate, estimate, hold), forward, sync, cancel, logs, results.

Scheduler calls never happen inside a database transaction: a slow or dead cluster must not
hold row locks. Forwarding is idempotent by claim (pending -> submitting) plus the portal uuid
the backend tags each job with; finalisation is exactly once by claiming finalized_at.

The package re-exports every service (and the constants and helpers that tasks and tests use)
so callers import from `jobs.services`; each use case lives in its own module: cluster_accounts
(cluster accounts), submit (estimate, submit, batch submit, queueing the forward), forward,
sync (sync and finalisation), direct (work submitted outside the portal, found by the sync),
cancel, files (logs and results) and templates.
"""

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
    _record_forwarded_many,
    job_forward,
    job_ref,
    job_spec,
    jobs_forward_batch,
    jobs_to_reforward,
)
from jobs.services.submit import (
    BATCH_KEY_MAX,
    BATCH_MAX,
    FORWARD_DEBOUNCE_KEY,
    FORWARD_DEBOUNCE_SECONDS,
    SPEC_FIELDS,
    forward_debounce_clear,
    job_estimate,
    job_submit,
    job_submit_many,
    qualified_project,
)
from jobs.services.sync import (
    EVENT_FIELDS,
    FINALIZE_BATCH,
    MISSING_BATCH,
    STALE_SUBMITTING,
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
    "FORWARD_DEBOUNCE_KEY",
    "FORWARD_DEBOUNCE_SECONDS",
    "FORWARD_THREADS",
    "LOG_DEFAULT_LIMIT",
    "LOG_MAX_LIMIT",
    "MISSING_BATCH",
    "SPEC_FIELDS",
    "STALE_SUBMITTING",
    "STREAMS",
    "DirectResult",
    "SyncResult",
    "_record_forwarded_many",
    "clean_result_path",
    "cluster_account_create",
    "cluster_direct_sync",
    "cluster_sync",
    "direct_jobs_record",
    "direct_key",
    "forward_debounce_clear",
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
    "jobs_to_reforward",
    "qualified_project",
]
