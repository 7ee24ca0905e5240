"""`manage.py bootstrap_demo [--json] [--username NAME] [--su N] [--backend local|simulated|slurm]`

Creates, idempotently, everything a demo or benchmark needs: a user who can sign in (verified
email), their organization and project (they own/lead both), a cluster on the chosen backend
with default rates, the user's cluster account, a grant allocation of N SU, and an API token.

Credentials: the password and the token secret are derived from SECRET_KEY with HMAC, so a
re-run prints the same working password and token without storing either in clear. That is
fine for a demo and nothing else: whoever knows SECRET_KEY can compute them, and a re-run
resets the user's password. Never point --username at a real person's account.
If the demo token was revoked, expired or made under another SECRET_KEY, a re-run revokes it
and issues a new one. The allocation is credited once (a fixed ledger idempotency key), so a
re-run never adds SU; different --username values give separate tenants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.authentication import hash_token
from accounts.models import ApiToken, Membership, Organization, Project, ProjectMember, User
from jobs.services import cluster_account_create
from quotas.models import Allocation, Cluster, LedgerEntry, Rate
from quotas.services import allocation_create, rate_create

CLUSTER_NAMES = {"local": "local", "simulated": "sim", "slurm": "slurm"}
TOKEN_NAME = "demo"  # noqa: S105 (the token's name, not a secret)
LIMITS = {"max_gpus": 4, "max_cpus": 2, "max_memory_mb": 16000, "max_time_minutes": 1440}
DEFAULT_RATES = {
    "gpu_hour": Decimal("1"),
    "cpu_hour": Decimal("0.05"),
    "mem_gb_hour": Decimal("0.005"),
}
CLUSTER_USER_RE = re.compile(r"[^a-z0-9_-]+")


def _derive(purpose: str, value: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"{purpose}:{value}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def demo_password(username: str) -> str:
    """The demo user's password: reproducible from SECRET_KEY, never stored in clear."""
    return _derive("gpuc-demo-password", username)[:24]


def _slurm_options() -> dict[str, Any]:
    gpu_types = os.environ.get("SLURM_GPU_TYPES", "h100")
    return {
        "url": os.environ.get("SLURM_REST_URL", "http://127.0.0.1:6820"),
        "jwt_key_file": os.environ.get(
            "SLURM_JWT_KEY_FILE", "/var/lib/gpucommons-slurm/jwt_hs256.key"
        ),
        "shared_root": os.environ.get("SLURM_SHARED_ROOT", "/var/lib/gpucommons-slurm/shared"),
        "partition": os.environ.get("SLURM_PARTITION", "gpu"),
        "gpu_types": [t.strip() for t in gpu_types.split(",") if t.strip()],
        **LIMITS,
    }


def cluster_options(backend: str) -> dict[str, Any]:
    if backend == "slurm":
        return _slurm_options()
    if backend == "simulated":
        return {"gpu_types": ["h100", "a100"], "gpus": 64, **LIMITS}
    return {"gpu_types": ["demo"], **LIMITS, "max_cpus": 4}


def cluster_username(backend: str, username: str) -> str:
    """Slurm: the Unix account `gpuc-<username>` (deploy/slurm/up.sh makes gpuc-demo);
    local and simulated: the portal username, made a valid cluster user name."""
    base = f"gpuc-{username}" if backend == "slurm" else username
    name = CLUSTER_USER_RE.sub("-", base.lower()).strip("-") or "user"
    if not re.match(r"[a-z_]", name):
        name = f"u{name}"
    return name[:32]


def _unix_uid(name: str) -> int | None:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
    return uid if uid >= 1000 else None


class Command(BaseCommand):
    help = "Create (idempotently) a demo user, organization, project, cluster, allocation, token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--username", default="demo")
        parser.add_argument("--su", default="1000", help="SU granted on first run (default 1000)")
        parser.add_argument("--backend", choices=sorted(CLUSTER_NAMES), default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        backend: str = options["backend"] or settings.GPUC_DEMO_BACKEND
        if backend not in CLUSTER_NAMES:
            raise CommandError(f"Unknown backend {backend!r}: use local, simulated or slurm")
        try:
            User.username_validator(username)
        except ValidationError as exc:
            raise CommandError(f"Invalid --username: {' '.join(exc.messages)}") from None
        try:
            amount = Decimal(options["su"])
        except InvalidOperation:
            raise CommandError("--su must be a number") from None
        if amount <= 0:
            raise CommandError("--su must be positive")

        with transaction.atomic():
            result = self._bootstrap(username=username, backend=backend, amount=amount)

        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        alloc = result["allocation"]
        self.stdout.write(
            "\n".join(
                [
                    f"User:         {result['username']} / {result['password']}",
                    f"API token:    {result['token']}",
                    f"Organization: {result['organization']['name']} "
                    f"({result['organization']['uuid']})",
                    f"Project:      {result['project']['name']} ({result['project']['uuid']})",
                    f"Cluster:      {result['cluster']['name']} [{result['cluster']['kind']}]",
                    f"Allocation:   {alloc['uuid']}: {alloc['available']} SU available",
                ]
            )
        )

    def _bootstrap(self, *, username: str, backend: str, amount: Decimal) -> dict[str, Any]:
        user = self._user(username)
        password = demo_password(username)
        user.set_password(password)
        user.save(update_fields=["password"])
        org, project = self._tenant(user)
        cluster = self._cluster(backend)
        cluster_account_create(
            actor=None,
            user=user,
            cluster=cluster,
            username=(name := cluster_username(backend, username)),
            uid=_unix_uid(name) if backend == "slurm" else None,
        )
        allocation = self._allocation(project, cluster, amount)
        allocation.refresh_from_db()
        token = self._token(user)
        return {
            "username": user.username,
            "password": password,
            "token": token,
            "organization": {"uuid": str(org.uuid), "name": org.name, "slug": org.slug},
            "project": {
                "uuid": str(project.uuid),
                "name": project.name,
                "slug": project.slug,
                "organization": str(org.uuid),
            },
            "cluster": {
                "uuid": str(cluster.uuid),
                "name": cluster.name,
                "kind": cluster.kind,
                "gpu_types": cluster.gpu_types,
            },
            "allocation": {
                "uuid": str(allocation.uuid),
                "kind": allocation.kind,
                "credited": str(allocation.credited),
                "available": str(allocation.available),
                "ends_at": allocation.ends_at.isoformat(),
            },
        }

    def _user(self, username: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            email = f"{username}@demo.example.org"
            try:
                validate_email(email)
            except ValidationError:
                email = (
                    f"user-{hashlib.sha256(username.encode()).hexdigest()[:12]}@demo.example.org"
                )
            user = User.objects.create_user(username=username, email=email)
        # Mandatory email verification: the demo user's address is verified so they can sign in.
        EmailAddress.objects.update_or_create(
            user=user, email=user.email, defaults={"verified": True, "primary": True}
        )
        return user

    def _tenant(self, user: User) -> tuple[Organization, Project]:
        slug = (
            f"{user.username}-lab".lower().replace("@", "-at-").replace(".", "-").replace("+", "-")
        )
        org = Organization.objects.filter(slug=slug).first()
        if org is None:
            name = "Demo Lab" if user.username == "demo" else f"Demo Lab ({user.username})"
            org = account_services.org_create(actor=user, name=name, slug=slug)
        elif not Membership.objects.filter(
            organization=org, user=user, role=Membership.Role.OWNER
        ).exists():
            raise CommandError(f"Organization '{slug}' exists and {user.username} does not own it")
        project = Project.objects.filter(organization=org, slug="demo").first()
        if project is None:
            project = account_services.project_create(
                actor=user,
                organization=org,
                name="Demo project",
                slug="demo",
                description="Created by manage.py bootstrap_demo.",
            )
        elif not ProjectMember.objects.filter(project=project, user=user).exists():
            ProjectMember.objects.create(project=project, user=user, role=ProjectMember.Role.PI)
        return org, project

    def _cluster(self, backend: str) -> Cluster:
        name = CLUSTER_NAMES[backend]
        wanted = cluster_options(backend)
        cluster = Cluster.objects.filter(name=name).first()
        if cluster is None:
            cluster = Cluster.objects.create(
                name=name,
                display_name=f"{backend.capitalize()} demo cluster",
                kind=backend,
                options=wanted,
            )
        else:
            if cluster.kind != backend:
                raise CommandError(f"Cluster '{name}' exists with backend {cluster.kind}")
            # Fill in missing keys; for Slurm, explicitly set SLURM_* variables win.
            explicit = {
                key: wanted[key]
                for key, var in (
                    ("url", "SLURM_REST_URL"),
                    ("jwt_key_file", "SLURM_JWT_KEY_FILE"),
                    ("shared_root", "SLURM_SHARED_ROOT"),
                    ("partition", "SLURM_PARTITION"),
                    ("gpu_types", "SLURM_GPU_TYPES"),
                )
                if backend == "slurm" and var in os.environ
            }
            merged = {**wanted, **cluster.options, **explicit}
            if merged != cluster.options:
                cluster.options = merged
                cluster.save(update_fields=["options"])
        if not Rate.objects.filter(cluster=cluster).exists():
            for gpu_type in ["", *cluster.gpu_types]:
                rate_create(
                    actor=None,
                    cluster=cluster,
                    resource=Rate.Resource.GPU_HOUR,
                    gpu_type=gpu_type,
                    su_per_unit=DEFAULT_RATES["gpu_hour"],
                )
            for resource in (Rate.Resource.CPU_HOUR, Rate.Resource.MEM_GB_HOUR):
                rate_create(
                    actor=None,
                    cluster=cluster,
                    resource=resource,
                    su_per_unit=DEFAULT_RATES[resource],
                )
        return cluster

    def _allocation(self, project: Project, cluster: Cluster, amount: Decimal) -> Allocation:
        key = f"bootstrap_demo:{project.uuid}:{cluster.uuid}:grant"
        entry = LedgerEntry.objects.filter(idempotency_key=key).select_related("allocation").first()
        if entry is not None:
            return entry.allocation
        return allocation_create(
            actor=None,
            project=project,
            kind=Allocation.Kind.GRANT,
            clusters=[cluster],
            starts_at=timezone.now() - timedelta(minutes=1),
            ends_at=timezone.now() + timedelta(days=365),
            amount=amount,
            memo="Demo grant (manage.py bootstrap_demo)",
            key=key,
        )

    def _token(self, user: User) -> str:
        """Re-print the active demo token if its secret is derivable; otherwise re-issue it."""
        active = [t for t in ApiToken.objects.filter(user=user, name=TOKEN_NAME) if t.is_active]
        for token in active:
            raw = f"gpuc_{token.prefix}_{account_services.demo_token_secret(token.prefix)}"
            if hash_token(raw) == token.token_hash:
                return raw
        for token in active:
            account_services.api_token_revoke(actor=user, token=token)
        _token, raw = account_services.api_token_create(
            actor=user,
            name=TOKEN_NAME,
            scope=ApiToken.Scope.WRITE,
            secret_from_prefix=account_services.demo_token_secret,
        )
        return raw
