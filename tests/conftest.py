"""Three people: alice owns the organization and leads its project, bob is a member,
mallory is an outsider with a tenant of her own."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from allauth.account.models import EmailAddress
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Membership, Organization, Project, ProjectMember, User
from quotas.models import Allocation, Cluster, Rate
from quotas.services import ledger_credit
from tests import factories


@dataclass
class Tenant:
    org: Organization
    project: Project


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI the suite runs on PostgreSQL: its row-lock races must run, never skip."""
    from django.db import connection

    if os.environ.get("CI") and connection.vendor != "postgresql":
        pytest.exit("CI must run the suite on PostgreSQL (set DATABASE_URL)", returncode=1)


def database_url() -> str:
    """DATABASE_URL of the test database, for the portal processes a test starts (gunicorn, a
    Celery worker)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "postgres") + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = 60,
    what: str | Callable[[], str] = "",
    every: float = 0.5,
) -> Any:
    """predicate()'s first true value, asked every `every` seconds; the test fails after
    `timeout` seconds, naming `what` (a text, or a function that tells the state then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            told = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout} s waiting for {told or predicate}")
        time.sleep(every)


# The one skip CI accepts: a behaviour a Slurm version lacks (slurm/conftest.refusing_slurm).
CI_ACCEPTED_SKIP = "not on this Slurm version: "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    refuse_skip_in_ci(outcome.get_result())


def refuse_skip_in_ci(report: Any) -> None:
    """In CI nothing is skipped: a test that needs PostgreSQL, Slurm, LDAP, nginx, JupyterLab,
    Chromium or root fails there instead, whichever marker or fixture skipped it."""
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
    if reason.removeprefix("Skipped: ").startswith(CI_ACCEPTED_SKIP):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, where every test must run: {reason}"


@pytest.fixture(autouse=True)
def _fresh_rate_tables() -> None:
    """Each process caches rate tables by cluster id for a few seconds; a database that reuses
    ids after a rollback (SQLite) would otherwise hand one test the rates of another."""
    from quotas.services import forget_cached_rates

    forget_cached_rates()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """Hashing cost is not under test here; PBKDF2 at full strength costs ~1 s per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(db: None) -> User:
    return factories.UserFactory(username="alice", email="alice@uni.example")


@pytest.fixture
def bob(db: None) -> User:
    return factories.UserFactory(username="bob", email="bob@uni.example")


@pytest.fixture
def mallory(db: None) -> User:
    return factories.UserFactory(username="mallory", email="mallory@evil.example")


@pytest.fixture
def tenant(alice: User, bob: User) -> Tenant:
    org = factories.OrganizationFactory(name="Vision Lab", slug="vision-lab")
    Membership.objects.create(organization=org, user=alice, role=Membership.Role.OWNER)
    Membership.objects.create(organization=org, user=bob, role=Membership.Role.MEMBER)
    project = factories.ProjectFactory(organization=org, name="Protein folding", slug="folding")
    ProjectMember.objects.create(project=project, user=alice, role=ProjectMember.Role.PI)
    ProjectMember.objects.create(project=project, user=bob, role=ProjectMember.Role.MEMBER)
    return Tenant(org=org, project=project)


@pytest.fixture
def mallory_tenant(mallory: User) -> Tenant:
    org = factories.OrganizationFactory(
        name="Evil Corp", slug="evil", kind=Organization.Kind.COMPANY
    )
    Membership.objects.create(organization=org, user=mallory, role=Membership.Role.OWNER)
    project = factories.ProjectFactory(organization=org, name="Heist", slug="heist")
    ProjectMember.objects.create(project=project, user=mallory, role=ProjectMember.Role.PI)
    return Tenant(org=org, project=project)


@pytest.fixture
def cluster(db: None) -> Cluster:
    """A simulated cluster priced at 2 SU/GPU-hour (h100), 1 SU/GPU-hour otherwise,
    0.1 SU/CPU-hour and 0.01 SU/GB-hour."""
    c = factories.ClusterFactory(name="sim", kind=Cluster.Kind.SIMULATED)
    factories.RateFactory(
        cluster=c, resource=Rate.Resource.GPU_HOUR, gpu_type="h100", su_per_unit=Decimal("2")
    )
    factories.RateFactory(
        cluster=c, resource=Rate.Resource.GPU_HOUR, gpu_type="", su_per_unit=Decimal("1")
    )
    factories.RateFactory(cluster=c, resource=Rate.Resource.CPU_HOUR, su_per_unit=Decimal("0.1"))
    factories.RateFactory(
        cluster=c, resource=Rate.Resource.MEM_GB_HOUR, su_per_unit=Decimal("0.01")
    )
    return c


@pytest.fixture
def allocation(tenant: Tenant, cluster: Cluster, alice: User) -> Allocation:
    """1000 SU for alice's project on the simulated cluster."""
    alloc = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(
        actor=None,
        allocation=alloc,
        amount=Decimal("1000"),
        key=f"test-credit-{alloc.pk}",
        memo="test grant",
    )
    alloc.refresh_from_db()
    return alloc


def verify_email(user: User) -> EmailAddress:
    address, _ = EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )
    return address


def can_sign_in(user: User) -> User:
    """Give the user the factories' password (the factory does not save it) and a verified email."""
    user.set_password(factories.PASSWORD)
    user.save(update_fields=["password"])
    verify_email(user)
    return user


def signed_in(user: User) -> Client:
    """A Django test client signed in as the user (email verified)."""
    can_sign_in(user)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def web() -> Callable[[User], Client]:
    """signed_in, as a fixture: web(user) is a test client signed in as the user."""
    return signed_in


def _api_client(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api_alice(alice: User) -> APIClient:
    return _api_client(alice)


@pytest.fixture
def api_bob(bob: User) -> APIClient:
    return _api_client(bob)


@pytest.fixture
def api_mallory(mallory: User) -> APIClient:
    return _api_client(mallory)


from tests.ldap_site import ldap_corner, ldap_site  # noqa: E402, F401 (shared fixtures)
