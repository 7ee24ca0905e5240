"""Django admin for every quotas model. Ledger entries and holds are read-only (the ledger is
append-only and changes only through quotas.services); allocation counters and request states
are read-only too: use /manage/ (or the services) to credit, adjust, extend or review. Rates
are read-only as well: they are scheduled only through quotas.services.rate_create (/manage/
rates), which refuses to backdate one (past charges never change) and clears the cached rate
tables."""

from __future__ import annotations

from typing import TypeVar

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from simple_history.admin import SimpleHistoryAdmin

from quotas.models import (
    Allocation,
    AllocationRequest,
    AllocationRequestEvent,
    Cluster,
    Hold,
    LedgerEntry,
    Rate,
)

_ModelT = TypeVar("_ModelT", bound=Model)


class ReadOnly:
    """For admins and inlines of what only the services may write."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin[_ModelT]):
    pass


class RateInline(ReadOnly, admin.TabularInline[Rate, Cluster]):
    model = Rate
    extra = 0
    fields = ["resource", "gpu_type", "su_per_unit", "effective_from"]
    readonly_fields = ["resource", "gpu_type", "su_per_unit", "effective_from"]
    ordering = ["resource", "gpu_type", "-effective_from"]


@admin.register(Cluster)
class ClusterAdmin(SimpleHistoryAdmin[Cluster]):
    list_display = ["name", "display_name", "kind", "enabled", "created_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "display_name"]
    inlines = [RateInline]


@admin.register(Rate)
class RateAdmin(ReadOnlyAdmin[Rate], SimpleHistoryAdmin[Rate]):
    list_display = ["cluster", "resource", "gpu_type", "su_per_unit", "effective_from"]
    list_filter = ["cluster", "resource"]
    date_hierarchy = "effective_from"


@admin.register(Allocation)
class AllocationAdmin(SimpleHistoryAdmin[Allocation]):
    list_display = [
        "uuid",
        "project",
        "kind",
        "status",
        "credited",
        "held",
        "charged",
        "starts_at",
        "ends_at",
    ]
    list_filter = ["kind", "status", "clusters"]
    search_fields = ["uuid", "project__name", "project__organization__name", "memo"]
    raw_id_fields = ["project"]
    readonly_fields = [
        "uuid",
        "status",
        "status_reason",
        "credited",
        "held",
        "charged",
        "notified",
        "created_at",
    ]


class AllocationRequestEventInline(admin.TabularInline[AllocationRequestEvent, AllocationRequest]):
    model = AllocationRequestEvent
    extra = 0
    can_delete = False
    readonly_fields = ["actor", "from_state", "to_state", "comment", "changes", "created_at"]

    def has_add_permission(
        self, request: HttpRequest, obj: AllocationRequest | None = None
    ) -> bool:
        return False


@admin.register(AllocationRequest)
class AllocationRequestAdmin(SimpleHistoryAdmin[AllocationRequest]):
    list_display = ["title", "project", "kind", "amount", "state", "requested_by", "created_at"]
    list_filter = ["state", "kind"]
    search_fields = ["uuid", "title", "project__name", "funder", "award_number"]
    raw_id_fields = ["project", "extends", "requested_by", "allocation"]
    readonly_fields = ["uuid", "state", "allocation", "created_at", "updated_at"]
    inlines = [AllocationRequestEventInline]


@admin.register(AllocationRequestEvent)
class AllocationRequestEventAdmin(ReadOnlyAdmin[AllocationRequestEvent]):
    list_display = ["request", "from_state", "to_state", "actor", "created_at"]
    list_filter = ["to_state"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin[Hold]):
    list_display = ["key", "allocation", "cluster", "amount", "charged", "released", "state"]
    list_filter = ["state", "cluster"]
    search_fields = ["key", "job_uuid"]
    date_hierarchy = "created_at"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin[LedgerEntry]):
    list_display = ["created_at", "kind", "amount", "allocation", "cluster", "actor", "memo"]
    list_filter = ["kind", "cluster"]
    search_fields = ["idempotency_key", "memo", "job_uuid"]
    date_hierarchy = "created_at"
