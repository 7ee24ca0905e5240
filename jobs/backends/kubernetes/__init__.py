"""Kubernetes: one batch/v1 Job per portal job, through the official `kubernetes` client.

Cluster options (`Cluster.options`, checked by `check_options` at startup):

    connection  `host` (API server URL) with `ca_file` (or `verify_ssl: false`, tests only) and a
                bearer token read from `token_env` (an environment variable name) or `token_file`
                (a path, re-read when it changes); or `kubeconfig` (path, optional `context`);
                or `in_cluster: true`. A token is never stored in the options.
                `connect_timeout` / `read_timeout` in seconds (5 / 30). `list_page_size`
                (default 500): at most this many Jobs or Pods per list request.
    namespaces  `namespace_prefix` (default "gpuc-"): one namespace per project, prefix +
                "<organization slug>.<project slug>" made DNS-1123 safe (the dot becomes a
                dash plus a short hash, so projects with the same slug in two organizations
                never share a namespace), created on first use and labelled
                app.kubernetes.io/managed-by=gpu-commons. Or `namespace`: one fixed namespace
                for every project (for a namespaced token; nothing is created then).
    images      `allowed_images` (glob patterns, e.g. "nvcr.io/nvidia/pytorch:*") and
                `default_image` (used when a job names none; must be allowed).
    GPUs        `gpu_resource` (default "nvidia.com/gpu"), `gpu_types`, `node_selectors`
                {gpu_type: {label: value}}, optional `gpu_quota` (the default concurrent GPU cap
                of each project namespace, when the portal sets none for the project).
    direct work `direct_overlap_seconds` (default 120): how far each search for Jobs made
                outside the portal reaches back before the previous one's listing time.
    scheduling  optional `queue_name` (Kueue label kueue.x-k8s.io/queue-name) and
                `priority_class`; `run_as_user` / `run_as_group` (default 1000; pods never run
                as root); `ttl_seconds_after_finished` (default 7 days: logs stay readable
                that long).
    results     `results_pvc` (a PersistentVolumeClaim of that name in each job namespace) or
                `results_nfs` {server, path}; mounted at `results_mount_path` in the pod (the
                job's working directory) with the job's UUID as sub-path, and seen on the
                portal host at `results_host_path`, so results are read from
                <results_host_path>/<job uuid>/.
    limits      `max_gpus`, `max_cpus`, `max_memory_mb`, `max_time_minutes`, `max_array_tasks`.

Project accounts (manages_accounts unless `namespace` is fixed):
- A project's account is its namespace (project_namespace / KubernetesBackend.account_name
  give SchedulerAccount.name). push_accounts keeps one ResourceQuota "gpu-commons" in it:
  requests.<gpu_resource> = the project's GPU cap, and pods: "0" while it may start nothing
  (AccountSpec.blocked or closed): see accounts.py for why `pods` and not count/jobs.batch. One
  listing of the managed quotas per tick, a write only where one differs; refusals per
  namespace with the API server's message. Kubernetes cannot hold an SU budget: see
  push_accounts for the bound on overspend.
- direct_jobs lists the cluster's Jobs once per tick and returns the finished ones in the
  asked namespaces, id "<namespace>/<Job uid>" (a Job made again under the same name is new
  work), tagged ones with their portal uuid for the portal to tell its own from forgeries.

Behaviour worth knowing:
- The Job is named gpuc-<uuid> and labelled gpu-commons/job-uuid, so a retried submission
  meets 409 AlreadyExists and is treated as already submitted.
- poll() makes one listing per cluster (all namespaces, or the fixed `namespace`) with the
  managed-by label selector, plus one pods listing only when some jobs failed (exit codes).
  usage() reuses that listing when it is fresh, so a sync tick costs one Jobs listing.
- Every list is paged (`limit` = list_page_size, then `continue`): one request per page, all
  pages from the snapshot the first one saw, whose Date header is the listing's time. When a
  continue token expires (410 Expired) the listing starts again once from a fresh first page,
  never returning part of a list; a second expiry is BackendUnavailable.
- The time limit is the Job's activeDeadlineSeconds: for arrays it covers the whole array
  (Kubernetes enforces it per Job), and usage is wall time x min(parallelism, completions).
- Kubernetes merges stderr into stdout: the "stderr" stream is always empty with eof. For
  arrays, stream "stdout.<index>" reads one index ("stdout" is index 0). Logs live as long as
  the pods (ttl_seconds_after_finished); results live on the volume.
- A script goes into ConfigMap gpuc-<uuid>-script before the Job is created (so a Job found
  after a lost answer can still start), then the Job is made its owner for garbage collection.
- Interactive sessions (a JobSpec with a session_port, which the portal sets for a job of
  kind session, never from its env; the Job is labelled gpu-commons/session, which poll reads
  back): before the Job, a Secret gpuc-<uuid>-session holds the app's secret (made here, 64
  hex digits; a retry keeps the first), handed to the pod as
  $GPUC_SESSION_TOKEN by secretKeyRef; the pod gets $GPUC_SESSION_FIXED_PORT (the app's port,
  or 8888 for apps that pick one: a pod has its own IP), a containerPort, an emptyDir as the
  wrapper's $GPUC_JOB_DIR (so session.json is never a result) and runs the wrapper with bash.
  After the Job, a ClusterIP Service gpuc-<uuid> owned by the Job selects the pod by its
  managed-by and uuid labels on that port; 409 is success when it carries the job's uuid.
  read_session_file answers {host: the Service's cluster IP, port, token} from the Service
  and the Secret (FileNotFoundError while either is missing), so the portal's proxy must run
  where the cluster's Service IPs route: on a node or in a pod (README, Interactive
  sessions). An IPv6-only Service gives gpuc-<uuid>.<namespace>.svc instead, which nginx
  reaches only with a `resolver` line. cancel() deletes both; poll() deletes
  both once a session's Job has ended (the Job's ownership of the Service is the net).
- A Job that disappears before it finished (deleted, or the foreground deletion completed
  before the sync saw it) reads as cancelled at the API server's time (its Date header).
- Connection errors, 5xx, 429 and 401 (expired or rotated token) raise BackendUnavailable:
  the job waits. Other 4xx raise BackendError with the Status message: the job is rejected.
- validate_spec(spec) lists (field, message) for what this cluster refuses (image outside
  allowed_images, label-unsafe name, arrays not of the form 0-N[%P], limits); job submission
  calls it before holding anything.
"""

from __future__ import annotations

from jobs.backends.kubernetes.accounts import project_namespace
from jobs.backends.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend", "project_namespace"]
