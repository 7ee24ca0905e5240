"""Sections other apps add to the project page (balance and allocations, recent jobs, cluster
accounts): accounts never imports quotas or jobs, so they register a provider here

    from accounts.project_page import register_project_section
    register_project_section(my_provider)  # e.g. in QuotasConfig.ready()

A provider takes (user, project) and returns a ProjectSection, or None when the user may not
see it. Each provider reads through its app's selectors with a fixed number of queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from accounts.models import Project


@dataclass(frozen=True)
class ProjectSection:
    template: str  # rendered with `section` in its context
    order: int  # smaller first; the members section (accounts' own) sits at 50
    context: Mapping[str, Any] = field(default_factory=dict)


ProjectSectionProvider = Callable[[Any, Project], "ProjectSection | None"]
_providers: list[ProjectSectionProvider] = []


def register_project_section(provider: ProjectSectionProvider) -> None:
    """Add a section provider to the project page (idempotent)."""
    if provider not in _providers:
        _providers.append(provider)


def project_sections(user: Any, project: Project) -> list[ProjectSection]:
    """The sections this user sees on this project's page, in order."""
    sections = [s for provider in _providers if (s := provider(user, project)) is not None]
    return sorted(sections, key=lambda s: s.order)
