"""Clusters and their rates, grant requests, allocations and the append-only ledger.

Counter rules (LedgerEntry.kind -> Allocation counters), all in the entry's transaction:
    credit      credited += amount
    hold        held     += amount
    release     held     -= amount
    charge      held     -= amount, charged += amount   (always out of a hold)
    refund      charged  -= amount
    expire      credited -= amount                       (the unspent remainder at expiry)
    adjustment  credited += amount                       (signed; staff only, memo required)
Amounts are positive except for adjustments. available = credited - held - charged >= 0.

Further invariants proven by `manage.py reconcile_ledger` (quotas.reconcile):
    held == sum of the amounts of the allocation's open holds
    every hold has exactly one `hold` entry of its amount; a settled hold's charge and
    release entries add up to its amount; an expired allocation has nothing available.

Status: `active` <-> `exhausted` follows the counters (exhausted = nothing available and
nothing held; a credit, refund or release reactivates it); `suspended` and `expired` are set
by services only (allocation_suspend/resume, allocations_expire, allocation_extend).
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from accounts.models import Project, User
from quotas import documents

SU: dict[str, Any] = {"max_digits": 18, "decimal_places": 4}
# Half the ledger's quantum, as slack in the counters' CHECK constraints. On PostgreSQL every SU
# value is an exact numeric(18,4), a multiple of 0.0001, so "x >= y - SU_SLACK" means exactly
# "x >= y". SQLite (the development default) does the constraints' sums in floating point,
# where 0.0352 + 2.0748 > 2.11: without the slack a correct settlement would be refused there.
SU_SLACK = Decimal("0.00005")
ZERO = Decimal("0")
# The ledger's precision: every amount of SU it stores is a multiple of this.
QUANTUM = Decimal("0.0001")


def su(value: Decimal | int | str) -> Decimal:
    """Round an amount of service units to the ledger's precision (4 places, half up)."""
    return Decimal(value).quantize(QUANTUM, rounding=ROUND_HALF_UP)


class Cluster(models.Model):
    """A priced, allocatable compute resource driven by one backend."""

    class Kind(models.TextChoices):
        SLURM = "slurm", "Slurm"
        KUBERNETES = "kubernetes", "Kubernetes"
        LOCAL = "local", "Local (development)"
        SIMULATED = "simulated", "Simulated"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Dotted path to the backend class, like EMAIL_BACKEND; empty = settings.GPUC_BACKENDS[kind].
    backend = models.CharField(max_length=200, blank=True)
    # URL, credential env/secret names, partitions, GPU types, limits (see each backend's docs).
    options = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = HistoricalRecords()
    # The author django-simple-history records for the next save (services set it).
    _history_user: User

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name

    @property
    def backend_path(self) -> str:
        return self.backend or settings.GPUC_BACKENDS[self.kind]

    def is_open_to(self, *organization_slugs: str) -> bool:
        """Whether any of these organizations may use the cluster: every organization may,
        unless the options carry "allowed_organizations" (a list of organization slugs).
        The one place that reads that option."""
        allowed = self.options.get("allowed_organizations")
        return allowed is None or any(slug in allowed for slug in organization_slugs)

    @property
    def gpu_types(self) -> list[str]:
        return list(self.options.get("gpu_types", []))


class Rate(models.Model):
    """SU per unit of a resource on a cluster from a date on; past charges never change."""

    class Resource(models.TextChoices):
        GPU_HOUR = "gpu_hour", "GPU-hour"
        CPU_HOUR = "cpu_hour", "CPU-hour"
        MEM_GB_HOUR = "mem_gb_hour", "GB-hour of memory"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="rates")
    resource = models.CharField(max_length=16, choices=Resource.choices)
    gpu_type = models.CharField(max_length=64, blank=True, help_text="Only for GPU-hour rates")
    su_per_unit = models.DecimalField(max_digits=14, decimal_places=6)
    effective_from = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    history = HistoricalRecords()
    # The author django-simple-history records for the next save (services set it).
    _history_user: User

    class Meta:
        ordering = ["cluster", "resource", "gpu_type", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "resource", "gpu_type", "effective_from"],
                name="rate_unique_effective",
            ),
            models.CheckConstraint(condition=Q(su_per_unit__gte=0), name="rate_non_negative"),
        ]

    def __str__(self) -> str:
        kind = f"{self.resource}:{self.gpu_type}" if self.gpu_type else self.resource
        since = f"{self.effective_from:%Y-%m-%d}"
        return f"{self.cluster.name} {kind} = {self.su_per_unit} SU from {since}"


class Allocation(models.Model):
    """SU a project may spend on some clusters between two dates."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        TRIAL = "trial", "Trial"
        ADJUSTMENT = "adjustment", "Adjustment"
        POSTPAID = "postpaid", "Post-paid credit line"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        EXHAUSTED = "exhausted", "Exhausted"
        SUSPENDED = "suspended", "Suspended"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="allocations")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GRANT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Why the allocation is suspended (shown to its members and in 402 answers) or expired.
    status_reason = models.CharField(max_length=500, blank=True)
    clusters = models.ManyToManyField(Cluster, related_name="allocations")
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    credited = models.DecimalField(**SU, default=ZERO)
    held = models.DecimalField(**SU, default=ZERO)
    charged = models.DecimalField(**SU, default=ZERO)
    memo = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Notifications already sent ("80", "100", "expiry-30", "expiry-7"): each goes once.
    notified = models.JSONField(default=list, blank=True)
    history = HistoricalRecords(excluded_fields=["credited", "held", "charged"])
    # The author django-simple-history records for the next save (services set it).
    _history_user: User

    class Meta:
        ordering = ["ends_at", "id"]
        indexes = [models.Index(fields=["project", "status", "ends_at"])]
        permissions = [
            ("manage_allocation", "Can credit, debit, extend, suspend and resume allocations"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(held__gte=-SU_SLACK), name="allocation_held_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(charged__gte=-SU_SLACK), name="allocation_charged_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(credited__gte=F("held") + F("charged") - SU_SLACK),
                name="allocation_never_overspent",
            ),
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")), name="allocation_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.uuid.hex[:8]} of {self.project}"

    @property
    def available(self) -> Decimal:
        return self.credited - self.held - self.charged


class AllocationRequest(models.Model):
    """A grant (or renewal/supplement) request going through review."""

    class Kind(models.TextChoices):
        NEW = "new", "New allocation"
        RENEWAL = "renewal", "Renewal"
        SUPPLEMENT = "supplement", "Supplement"

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, related_name="allocation_requests"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NEW)
    extends = models.ForeignKey(
        Allocation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="extension_requests",
    )
    title = models.CharField(max_length=200)
    amount = models.DecimalField(**SU)
    clusters = models.ManyToManyField(Cluster, related_name="allocation_requests")
    start_date = models.DateField()
    end_date = models.DateField()
    justification = models.TextField()
    funder = models.CharField(max_length=200, blank=True)
    award_number = models.CharField(max_length=100, blank=True)
    # Stored under a random name (never the uploaded one) and served only by the document
    # views, which check the caller; document_name is the uploaded name, for display only.
    document = models.FileField(upload_to=documents.storage_path, blank=True, max_length=255)
    document_name = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    allocation = models.OneToOneField(
        Allocation, on_delete=models.PROTECT, null=True, blank=True, related_name="request"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()
    # The author django-simple-history records for the next save (services set it).
    _history_user: User

    class Meta:
        ordering = ["-created_at"]
        permissions = [("review_allocationrequest", "Can review allocation requests")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="request_amount_positive"),
            models.CheckConstraint(
                condition=Q(end_date__gt=F("start_date")), name="request_end_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.get_state_display()})"

    @property
    def document_display_name(self) -> str:
        """The uploaded document's name (rows from before it was kept: the stored name)."""
        return self.document_name or documents.display_name(self.document.name or "")


class AllocationRequestEvent(models.Model):
    """One transition of a request: who, when, from, to, and the comment."""

    request = models.ForeignKey(AllocationRequest, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20)
    comment = models.TextField(blank=True)
    # What the reviewer changed on approval: {"amount": ["1000", "800"], ...}.
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.from_state or '∅'} → {self.to_state} by {self.actor}"


class Hold(models.Model):
    """A lien on one allocation for one job (or other spender), settled exactly once."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        SETTLED = "settled", "Settled"

    # No index of its own: (allocation, state) below leads with it.
    allocation = models.ForeignKey(
        Allocation, on_delete=models.PROTECT, related_name="holds", db_index=False
    )
    cluster = models.ForeignKey(
        Cluster, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    amount = models.DecimalField(**SU)
    charged = models.DecimalField(**SU, default=ZERO)
    released = models.DecimalField(**SU, default=ZERO)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    job_uuid = models.UUIDField(null=True, blank=True, db_index=True)
    key = models.CharField(max_length=200)  # unique: hold_unique_key
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["allocation", "state"])]
        constraints = [
            # A constraint, not unique=True: on PostgreSQL that would add a second,
            # varchar_pattern_ops index for LIKE queries nothing runs (migration 0007).
            models.UniqueConstraint(fields=["key"], name="hold_unique_key"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount__gte=F("charged") + F("released") - SU_SLACK),
                name="hold_never_overdrawn",
            ),
        ]

    def __str__(self) -> str:
        return f"Hold {self.amount} SU on {self.allocation_id} ({self.state})"


class LedgerEntry(models.Model):
    """An append-only record of one movement of SU on one allocation."""

    class Kind(models.TextChoices):
        CREDIT = "credit", "Credit"
        HOLD = "hold", "Hold"
        RELEASE = "release", "Release"
        CHARGE = "charge", "Charge"
        REFUND = "refund", "Refund"
        EXPIRE = "expire", "Expire"
        ADJUSTMENT = "adjustment", "Adjustment"

    # No index of its own: ledger_alloc_kind_time leads with it.
    allocation = models.ForeignKey(
        Allocation, on_delete=models.PROTECT, related_name="ledger", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(**SU)
    # Where the SU were spent (hold, release, charge, expire-after-release); null otherwise.
    cluster = models.ForeignKey(
        Cluster, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    hold = models.ForeignKey(
        Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    memo = models.CharField(max_length=500, blank=True)
    job_uuid = models.UUIDField(null=True, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=200)  # unique: ledger_unique_idempotency_key
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(
                fields=["allocation", "kind", "created_at"], name="ledger_alloc_kind_time"
            ),
            models.Index(fields=["kind", "created_at"], name="ledger_kind_time"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="ledger_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(kind="adjustment") | Q(amount__gt=0), name="ledger_amount_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} SU on {self.allocation_id}"


# The counter rules of this module's docstring as data: kind -> (credited, held, charged)
# multipliers applied to the entry's amount. Posting and reconcile_ledger both read it.
EFFECTS: dict[str, tuple[int, int, int]] = {
    LedgerEntry.Kind.CREDIT: (1, 0, 0),
    LedgerEntry.Kind.HOLD: (0, 1, 0),
    LedgerEntry.Kind.RELEASE: (0, -1, 0),
    LedgerEntry.Kind.CHARGE: (0, -1, 1),
    LedgerEntry.Kind.REFUND: (0, 0, -1),
    LedgerEntry.Kind.EXPIRE: (-1, 0, 0),
    LedgerEntry.Kind.ADJUSTMENT: (1, 0, 0),
}


class Trial(models.Model):
    """The one self-serve trial a company organization may start: the allocation it made.

    One row per organization, enforced by the database (two concurrent starts cannot both
    commit), so a trial is never granted twice even if its allocation later expires.
    """

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, related_name="trials"
    )
    allocation = models.OneToOneField(Allocation, on_delete=models.PROTECT, related_name="trial")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization"], name="trial_once_per_organization")
        ]

    def __str__(self) -> str:
        return f"Trial of {self.organization_id} ({self.created_at:%Y-%m-%d})"
