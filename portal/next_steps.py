"""What a signed-in user should do next, so that no page is a dead end.

One rule, read from the user's own tenancy: no organization → create one; no project →
create one (or ask an owner); no allocation with SU left → request a grant, buy SU or start a
trial; no cluster account → request access; else submit a job. Pages with nothing to show
render these steps as buttons (`{% next_steps %}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F
from django.urls import reverse

from accounts.selectors import organizations_for_user, organizations_managed_by, projects_for_user
from jobs.models import ClusterAccount
from quotas.billing.selectors import billing_organizations_for_user
from quotas.billing.stripe_api import billing_enabled
from quotas.models import Allocation
from quotas.selectors import allocations_for_user
from quotas.services.trials import trial_refusal


@dataclass(frozen=True)
class Step:
    """One thing to do: what it is, why, and the link (a GET page that does it)."""

    label: str
    url: str
    why: str = ""


@dataclass(frozen=True)
class NextSteps:
    headline: str
    steps: tuple[Step, ...]
    # The user has projects, SU and an account: nothing is missing.
    ready: bool = False


def next_steps_for_user(user: Any) -> NextSteps:
    """The user's missing piece and the buttons that supply it."""
    if user is None or not user.is_authenticated:
        return NextSteps("Sign in to start.", (Step("Sign in", reverse("account_login")),))
    organizations = list(organizations_for_user(user).order_by("name"))
    if not organizations:
        return NextSteps(
            "You do not belong to an organization yet.",
            (
                Step(
                    "Create an organization",
                    reverse("accounts:organization_create"),
                    "Your lab or company: it owns projects, allocations and billing.",
                ),
            ),
        )
    managed = list(organizations_managed_by(user).order_by("name"))
    if not projects_for_user(user).exists():
        if managed:
            return NextSteps(
                "You have no project yet.",
                (
                    Step(
                        "Create a project",
                        reverse("accounts:project_create"),
                        "Allocations, jobs and members belong to a project.",
                    ),
                ),
            )
        org = organizations[0]
        return NextSteps(
            f"You are not in a project of {org.name} yet: ask one of its owners or a project "
            "PI to add you.",
            (
                Step(
                    f"See {org.name}'s members",
                    reverse("accounts:organization_detail", args=[org.uuid]),
                ),
            ),
        )
    funded = (
        allocations_for_user(user)
        .filter(status=Allocation.Status.ACTIVE, credited__gt=F("held") + F("charged"))
        .exists()
    )
    if not funded:
        steps = [
            Step(
                "Request a grant",
                reverse("quotas:allocation_request_create"),
                "Reviewers approve SU for academic work.",
            )
        ]
        if billing_enabled():
            steps += [
                Step(f"Buy SU for {org.name}", reverse("billing:page", args=[org.uuid]))
                for org in billing_organizations_for_user(user).order_by("name")
            ]
        steps += [
            Step(
                f"Start a free trial for {org.name}",
                reverse("quotas:trial_start", args=[org.uuid]),
            )
            for org in managed
            if trial_refusal(actor=user, organization=org) is None
        ]
        return NextSteps("Your projects have no SU to spend yet.", tuple(steps))
    if not ClusterAccount.objects.filter(user=user).exists():
        return NextSteps(
            "You have no account on a cluster yet: jobs run as your cluster user.",
            (Step("Request cluster access", reverse("access-list")),),
        )
    return NextSteps("You are set up.", (Step("Submit a job", reverse("job-submit")),), ready=True)
