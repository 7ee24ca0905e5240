"""Django admin for jobs, read-only (jobs change only through jobs.services): staff find here
the direct jobs (submitted outside the portal) whose cost exceeded what their project had
available, filtered by "uncovered", to credit and charge or write off by hand."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.models import Job, SessionApp
from jobs.storage.models import ProjectStorage
from quotas.admin import ReadOnlyAdmin


class UncoveredFilter(admin.SimpleListFilter):
    title = "uncovered cost"
    parameter_name = "uncovered"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("yes", "Part of the cost not covered")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        if self.value() == "yes":
            return queryset.filter(uncovered_cost__gt=0)
        return queryset


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin[Job]):
    list_display = [
        "uuid",
        "name",
        "project",
        "cluster",
        "origin",
        "cluster_username",
        "state",
        "charged_cost",
        "uncovered_cost",
        "created_at",
    ]
    list_filter = ["origin", UncoveredFilter, "state", "cluster"]
    search_fields = ["uuid", "name", "backend_id", "cluster_username"]
    list_select_related = ["project", "cluster"]
    show_full_result_count = False
    exclude = ["script", "env"]


@admin.register(ProjectStorage)
class ProjectStorageAdmin(admin.ModelAdmin[ProjectStorage]):
    """Staff set a project's storage quota (bytes per cluster folder) here."""

    list_display = ("project", "quota_bytes", "updated_at")
    search_fields = ("project__name", "project__slug")
    raw_id_fields = ("project",)


@admin.register(SessionApp)
class SessionAppAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The interactive apps a facility offers. The command runs on the cluster inside each
    session's job (see jobs.services.sessions): staff-written, never a member's input."""

    list_display = ("slug", "name", "port", "token_scheme", "enabled")
    list_filter = ("enabled",)
    search_fields = ("slug", "name")
