"""Compute backends, chosen per cluster by a dotted path (see base.ComputeBackend)."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from jobs.backends.base import ComputeBackend
    from quotas.models import Cluster


def get_backend(cluster: Cluster) -> ComputeBackend:
    """The backend instance for a cluster, cached per (path, name, options)."""
    return _load(cluster.backend_path, cluster.name, json.dumps(cluster.options, sort_keys=True))


@functools.cache
def _load(path: str, name: str, options_json: str) -> ComputeBackend:
    backend_class: type[ComputeBackend] = import_string(path)
    return backend_class(name=name, options=json.loads(options_json))


@receiver(setting_changed)
def _forget_backends(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("GPUC_"):
        _load.cache_clear()
