"""The role groups every app checks, each defined once here (accounts owns the roles).

An organization's owners and admins manage all of its projects; its owners, admins and
billing members see every project's allocations and requests; its owners and billing
members manage its billing. A project's PIs and managers manage the project.
"""

from __future__ import annotations

from accounts.models import Membership, ProjectMember

ORG_MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
ORG_VIEWER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN, Membership.Role.BILLING)
ORG_BILLING_ROLES = (Membership.Role.OWNER, Membership.Role.BILLING)
PROJECT_MANAGER_ROLES = (ProjectMember.Role.PI, ProjectMember.Role.MANAGER)
