"""Cluster accounts, jobs, their timelines and templates."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Project
from jobs.drafts import DEFAULT
from quotas.models import SU, Cluster, Hold


class ClusterAccount(models.Model):
    """The Unix/cluster user a portal user's jobs run as on one cluster (never root)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cluster_accounts"
    )
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="accounts")
    username = models.CharField(max_length=32)
    uid = models.PositiveIntegerField(null=True, blank=True)
    # Set when the cluster's provisioner created the identity for an access request (the mark
    # it carries on the host or in the directory): only such identities are ever removed.
    provision_key = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "cluster"], name="cluster_account_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["cluster", "username"], name="cluster_account_unique_name"
            ),
            models.CheckConstraint(
                condition=Q(uid__isnull=True) | Q(uid__gte=1000), name="cluster_account_not_system"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.username}@{self.cluster.name}"


class ClusterAccessRequest(models.Model):
    """A member asks for an account on a cluster for a project. Approved at once (the
    cluster's access_policy "auto" and an active allocation there) or by staff; approval
    provisions the identity through the cluster's provisioner, outside any transaction."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for staff"
        APPROVED = "approved", "Approved, being provisioned"
        PROVISIONING = "provisioning", "Being provisioned"
        PROVISIONED = "provisioned", "Provisioned"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed"
        REVOKED = "revoked", "Revoked"

    OPEN_STATES = (State.PENDING, State.APPROVED, State.PROVISIONING)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_requests"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="access_requests")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="access_requests")
    username = models.CharField(max_length=32)
    uid = models.PositiveIntegerField(null=True, blank=True)  # asked for; None = allocated
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # Why it was rejected, failed or revoked (shown to the requester).
    reason = models.CharField(max_length=1000, blank=True)
    automatic = models.BooleanField(default=False)  # approved by the cluster's policy
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    provisioned_at = models.DateTimeField(null=True, blank=True)
    account = models.ForeignKey(
        ClusterAccount,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="access_requests",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "created_at"], name="access_request_queue")]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "cluster"],
                condition=Q(state__in=["pending", "approved", "provisioning"]),
                name="access_request_one_open_per_user",
            ),
            models.UniqueConstraint(
                fields=["cluster", "username"],
                condition=Q(state__in=["pending", "approved", "provisioning"]),
                name="access_request_open_name_unique",
            ),
            models.CheckConstraint(
                condition=Q(uid__isnull=True) | Q(uid__gte=1000), name="access_request_not_system"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.username}@{self.cluster.name} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES


class SchedulerAccount(models.Model):
    """The scheduler account of one project on one cluster: a Slurm account with an association
    per member who has a cluster account, or a Kubernetes namespace. The portal creates it,
    pushes the project's limits into it (the grant binds work that never touches the portal)
    and closes it; jobs found under it without a portal uuid are charged as direct work."""

    class State(models.TextChoices):
        WANTED = "wanted", "To be created"
        ACTIVE = "active", "Active"
        CLOSING = "closing", "To be closed"
        CLOSED = "closed", "Closed"

    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, related_name="scheduler_accounts"
    )
    cluster = models.ForeignKey(
        Cluster, on_delete=models.CASCADE, related_name="scheduler_accounts"
    )
    # The account (Slurm) or namespace (Kubernetes) name on the cluster; never changes.
    name = models.CharField(max_length=63)
    state = models.CharField(max_length=8, choices=State.choices, default=State.WANTED)
    # The project's concurrent GPU cap on this cluster (Slurm GrpTRES=gres/gpu=N, Kubernetes
    # ResourceQuota requests.nvidia.com/gpu); None = no cap beyond the allocation.
    gpu_cap = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    # What the scheduler was last told (None before the first push): the push diffs the wanted
    # state against these and sends only accounts that changed.
    pushed_limit_su = models.DecimalField(**SU, null=True, blank=True)
    pushed_unlimited = models.BooleanField(default=False)
    pushed_gpu_cap = models.PositiveIntegerField(null=True, blank=True)
    pushed_users = models.JSONField(default=list, blank=True)
    pushed_closed = models.BooleanField(default=False)
    pushed_blocked = models.BooleanField(default=False)  # AccountSpec.blocked last pushed
    pushed_at = models.DateTimeField(null=True, blank=True)
    # The scheduler's last refusal (its own message), how many pushes in a row it refused and
    # when to try again (exponential backoff); cleared by a successful push.
    last_error = models.CharField(max_length=1000, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cluster", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "cluster"], name="scheduler_account_one_per_project"
            ),
            models.UniqueConstraint(
                fields=["cluster", "name"], name="scheduler_account_unique_name"
            ),
            # Slurm account names: lower case letters, digits, '_' and '-' (Slurm folds
            # account names to lower case; anything else breaks sacctmgr and --account).
            models.CheckConstraint(
                condition=Q(name__regex=r"^[a-z][a-z0-9_-]{0,62}$"),
                name="scheduler_account_valid_name",
            ),
            models.CheckConstraint(
                condition=Q(gpu_cap__isnull=True) | Q(gpu_cap__lte=1_000_000),
                name="scheduler_account_sane_gpu_cap",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.cluster.name}"


class Job(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # held, waiting to be forwarded
        SUBMITTING = "submitting", "Submitting"  # claimed by a forwarder
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        TIMEOUT = "timeout", "Timeout"
        NODE_FAIL = "node_fail", "Node failure"
        REJECTED = "rejected", "Rejected"

    class Kind(models.TextChoices):
        BATCH = "batch", "Batch job"
        # An interactive app (JupyterLab, ...) reached through the portal's proxy: see Session.
        SESSION = "session", "Interactive session"

    class Origin(models.TextChoices):
        PORTAL = "portal", "Portal"
        # Found in the scheduler's accounting under a project's account without a portal
        # uuid (sbatch on a login node, kubectl): no hold, charged once from accounting.
        DIRECT = "direct", "Submitted outside the portal"

    ACTIVE_STATES = (State.PENDING, State.SUBMITTING, State.QUEUED, State.RUNNING)
    FINAL_STATES = (
        State.COMPLETED,
        State.FAILED,
        State.CANCELLED,
        State.TIMEOUT,
        State.NODE_FAIL,
        State.REJECTED,
    )

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # No single-column FK indexes: the composite indexes below lead with each of these, and
    # every index costs a write on each state change (sync updates thousands per tick).
    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, related_name="jobs", db_index=False
    )
    # Who submitted it; empty only for a direct job whose cluster user maps to no portal user
    # (cluster_username then says who ran it).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="jobs",
        db_index=False,
        null=True,
        blank=True,
    )
    cluster = models.ForeignKey(
        Cluster, on_delete=models.PROTECT, related_name="jobs", db_index=False
    )
    name = models.CharField(max_length=128)
    script = models.TextField(blank=True)
    image = models.CharField(max_length=255, blank=True)
    command = models.JSONField(default=list, blank=True)
    partition = models.CharField(max_length=64, blank=True)
    gpus = models.PositiveIntegerField(default=DEFAULT.gpus)
    gpu_type = models.CharField(max_length=64, blank=True)
    cpus = models.PositiveIntegerField(default=DEFAULT.cpus)
    memory_mb = models.PositiveIntegerField(default=DEFAULT.memory_mb)
    time_limit_minutes = models.PositiveIntegerField(default=DEFAULT.time_limit_minutes)
    array = models.CharField(max_length=64, blank=True)
    array_size = models.PositiveIntegerField(default=1)
    env = models.JSONField(default=dict, blank=True)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.PORTAL)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.BATCH)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    state_reason = models.CharField(max_length=500, blank=True)
    backend_id = models.CharField(max_length=128, blank=True)
    cluster_username = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    # When an answered poll first left this queued/running job out (cleared when the cluster
    # reports it again); sync ends the job once this is older than JOBS_MISSING_GRACE_SECONDS.
    missing_since = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    elapsed_seconds = models.PositiveIntegerField(null=True, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    estimated_cost = models.DecimalField(**SU, default=0)
    charged_cost = models.DecimalField(**SU, null=True, blank=True)
    # A direct job's cost that no allocation could cover when it was found (it ran before the
    # scheduler's limits caught up): charged_cost is what was available; staff follow this up.
    uncovered_cost = models.DecimalField(**SU, null=True, blank=True)
    hold = models.OneToOneField(
        Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="job"
    )
    idempotency_key = models.CharField(max_length=200, blank=True)
    forward_attempts = models.PositiveIntegerField(default=0)
    # Set by job_submit on a job it has just made (never on a replay): its first events, so the
    # API answers them without a query. Absent on a job read back from the database.
    submit_events: list[JobEvent]

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "-created_at", "-id"], name="job_project_keyset"),
            models.Index(fields=["user", "-created_at", "-id"], name="job_user_keyset"),
            models.Index(fields=["cluster", "state"], name="job_cluster_state"),
            # Sync reads only jobs not yet finalised: keep that index small forever.
            models.Index(
                fields=["cluster", "state"],
                condition=Q(finalized_at__isnull=True),
                name="job_unfinalized",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="job_unique_idempotency_key",
            ),
            # A direct job is recorded (and charged) once per scheduler job.
            models.UniqueConstraint(
                fields=["cluster", "backend_id"],
                condition=Q(origin="direct"),
                name="job_unique_direct_backend_id",
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | Q(origin="direct"),
                name="job_user_unless_direct",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES


class DirectWatermark(models.Model):
    """How far a cluster's accounting has been searched for direct work: the next search
    starts here (minus the backend's overlap). Moved forward only after the jobs found up to
    it are committed; its row is also the lock that serialises recording on one cluster."""

    cluster = models.OneToOneField(
        Cluster, on_delete=models.CASCADE, primary_key=True, related_name="direct_watermark"
    )
    since = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.cluster_id}: direct work searched up to {self.since:%Y-%m-%d %H:%M:%S}"


class JobEvent(models.Model):
    """One state transition (or notable event) of a job: the job page's timeline."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    message = models.CharField(max_length=1000, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.job_id}: {self.from_state} → {self.to_state}"


class JobTemplate(models.Model):
    """Prefills the submit form; global when project is empty."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, null=True, blank=True, related_name="job_templates"
    )
    name = models.CharField(max_length=128)
    description = models.CharField(max_length=500, blank=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.SET_NULL, null=True, blank=True)
    script = models.TextField(blank=True)
    image = models.CharField(max_length=255, blank=True)
    command = models.JSONField(default=list, blank=True)
    gpus = models.PositiveIntegerField(default=DEFAULT.gpus)
    gpu_type = models.CharField(max_length=64, blank=True)
    cpus = models.PositiveIntegerField(default=DEFAULT.cpus)
    memory_mb = models.PositiveIntegerField(default=DEFAULT.memory_mb)
    time_limit_minutes = models.PositiveIntegerField(default=DEFAULT.time_limit_minutes)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SessionApp(models.Model):
    """An interactive app a facility offers (JupyterLab ships; RStudio, code-server are rows a
    facility adds). `command` is a bash fragment run on the cluster inside the session's job,
    with placeholders filled by the portal: {port} and {token} become the shell variables
    $GPUC_SESSION_PORT and $GPUC_SESSION_TOKEN (set by the session wrapper on the node),
    {base_url} the quoted path /sessions/<uuid>/ the app must serve under. Only staff write it;
    no member input ever reaches it."""

    slug = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    command = models.TextField()
    # The port convention: 0 = the wrapper picks a free port on the node; else the app always
    # listens on this port.
    port = models.PositiveIntegerField(default=0)
    # How the proxy hands the app its secret upstream: "Authorization: <scheme> <secret>"
    # ("token" for Jupyter); blank: no header (an app that needs none, e.g. code-server with
    # --auth none, which then relies on the job's node being reachable only by the proxy).
    token_scheme = models.CharField(max_length=32, blank=True, default="token")
    # Where the app tells whether work is under way (Jupyter: "api/kernels", a list whose
    # items carry execution_state "busy"), below its base URL; blank: only the proxy's
    # traffic counts as activity.
    activity_path = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(port__lte=65535), name="session_app_valid_port"),
        ]

    def __str__(self) -> str:
        return self.name


class Session(models.Model):
    """The interactive part of a job of kind `session`: which app, where it listens and its
    secret, as the job reported them on the cluster (host, port, token). The token is the
    app's own password: only the proxy's auth answer carries it, never a page or the API."""

    job = models.OneToOneField(
        Job, on_delete=models.CASCADE, primary_key=True, related_name="session"
    )
    app = models.ForeignKey(SessionApp, on_delete=models.PROTECT, related_name="sessions")
    # Project managers may open it too (the owner's choice).
    shared_with_managers = models.BooleanField(default=False)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    token = models.CharField(max_length=128, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    # The last request through the proxy (or busy kernel the app reported); None: none yet.
    last_activity_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.app.slug} session {self.job_id}"

    @property
    def upstream(self) -> str:
        return f"{self.host}:{self.port}" if self.host and self.port else ""


class ProjectSessionSettings(models.Model):
    """A project's own rules for its interactive sessions, set by its managers: how long a
    session may sit idle before it is stopped (never above a cluster's maximum, which still
    caps it per cluster). No row: the portal's default (SESSIONS_IDLE_MINUTES)."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, related_name="session_settings"
    )
    idle_minutes = models.PositiveIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "project session settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(idle_minutes__gte=1), name="project_session_idle_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} sessions: idle {self.idle_minutes} min"


from jobs.storage.models import ProjectStorage, ProjectStorageUsage  # noqa: E402,F401  (registers the models)
