"""Startup checks: configuration problems are reported by `manage.py check`, not at first use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks
from django.db import DatabaseError
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from django.apps import AppConfig

    from jobs.backends.base import ComputeBackend
    from quotas.models import Cluster


@checks.register(checks.Tags.compatibility, deploy=False)
def check_cluster_backends(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every enabled cluster's backend loads and accepts its options, and so does its account
    provisioner (if any); `local` only when the local backend is enabled."""
    from jobs.backends.base import ComputeBackend
    from jobs.provisioning import check_access_options
    from quotas.models import Cluster

    try:
        clusters = list(Cluster.objects.filter(enabled=True))
    except DatabaseError:
        return []  # no tables yet (before migrate): nothing to check
    errors: list[checks.CheckMessage] = []
    for cluster in clusters:
        try:
            path = cluster.backend_path
            backend_class = import_string(path)
        except (ImportError, KeyError) as exc:
            errors.append(
                checks.Error(
                    f"Cluster '{cluster.name}': backend cannot be loaded ({exc})",
                    hint="Set Cluster.backend to a dotted path or GPUC_BACKENDS[kind].",
                    id="portal.E101",
                )
            )
            continue
        if not (isinstance(backend_class, type) and issubclass(backend_class, ComputeBackend)):
            errors.append(
                checks.Error(
                    f"Cluster '{cluster.name}': {path} is not a ComputeBackend",
                    id="portal.E102",
                )
            )
            continue
        problems = backend_class.check_options(cluster.options or {})
        for problem in problems:
            errors.append(checks.Error(f"Cluster '{cluster.name}': {problem}", id="portal.E103"))
        for problem in check_access_options(cluster.options or {}):
            errors.append(checks.Error(f"Cluster '{cluster.name}': {problem}", id="portal.E106"))
        if not problems:
            errors.extend(_check_running_cluster(backend_class, cluster))
        if path.endswith("backends.local.LocalBackend") and not (
            settings.GPUC_LOCAL_BACKEND_ENABLED
        ):
            errors.append(
                checks.Error(
                    f"Cluster '{cluster.name}' uses the local backend, which is disabled",
                    hint="Set GPUC_LOCAL_BACKEND_ENABLED=true (development only) or disable "
                    "the cluster.",
                    id="portal.E104",
                )
            )
    return errors


def _served_static_roots() -> list[Path]:
    """Every folder WhiteNoise (or runserver) may serve at a public URL."""
    roots: list[Any] = [
        settings.STATIC_ROOT,
        *settings.STATICFILES_DIRS,
        getattr(settings, "WHITENOISE_ROOT", None),
    ]
    return [Path(r[1] if isinstance(r, tuple) else r).resolve() for r in roots if r]


@checks.register(checks.Tags.security, checks.Tags.staticfiles)
def check_media_is_private(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Uploads (MEDIA_ROOT) are private: they must not lie in a folder served as static files."""
    media = Path(settings.MEDIA_ROOT).resolve()
    return [
        checks.Error(
            f"MEDIA_ROOT ({media}) lies inside {root}, which is served publicly as static files",
            hint="Move MEDIA_ROOT out of STATIC_ROOT, STATICFILES_DIRS and WHITENOISE_ROOT: "
            "uploads are served only by views that check the caller.",
            id="portal.E110",
        )
        for root in _served_static_roots()
        if media == root or root in media.parents
    ]


# The system check asks a running cluster at most this long (it runs at every start-up).
CHECK_TIMEOUT_SECONDS = 5


def _check_running_cluster(
    backend_class: type[ComputeBackend], cluster: Cluster
) -> list[checks.CheckMessage]:
    """What only the running cluster can tell (e.g. a slurmrestd serving no API version the
    portal speaks), asked once with a short timeout; an unreachable cluster is not an error."""
    from jobs.backends.base import ComputeBackend

    if backend_class.check_cluster is ComputeBackend.check_cluster:
        return []  # nothing to ask: do not build the backend (and its client) for nothing
    options = dict(cluster.options or {})
    for key in ("connect_timeout", "read_timeout"):
        options[key] = min(float(options.get(key, CHECK_TIMEOUT_SECONDS)), CHECK_TIMEOUT_SECONDS)
    backend = backend_class(name=cluster.name, options=options)
    return [
        checks.Error(
            f"Cluster '{cluster.name}': {problem}",
            hint="Pin api_version to a version the cluster serves, or upgrade Slurm.",
            id="portal.E105",
        )
        for problem in backend.check_cluster()
    ]
