"""Provisioners: how a cluster gets a member's identity, chosen per cluster like the compute
backends. Cluster options:

    access_policy        "approval" (default: staff approve each request) or "auto" (members
                         of a project with an active allocation on the cluster are approved
                         at once)
    provisioner          a kind in settings.GPUC_PROVISIONERS ("unix", "ldap") or a dotted path
                         to a jobs.provisioning.base.Provisioner subclass; none = no
                         self-service accounts on this cluster
    provisioner_options  the provisioner's own options (see each module's docstring); they
                         inherit the cluster's shared_root when they do not set one
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from jobs.provisioning.base import (
    Existing,
    Identity,
    NameTaken,
    Provisioned,
    Provisioner,
    ProvisionError,
    ProvisionUnavailable,
    UidTaken,
)

if TYPE_CHECKING:
    from quotas.models import Cluster

ACCESS_POLICIES = ("approval", "auto")
# The cluster options this package reads; every backend's check_options accepts them.
ACCESS_OPTION_KEYS = frozenset({"access_policy", "provisioner", "provisioner_options"})

__all__ = [
    "ACCESS_OPTION_KEYS",
    "ACCESS_POLICIES",
    "Existing",
    "Identity",
    "NameTaken",
    "ProvisionError",
    "ProvisionUnavailable",
    "Provisioned",
    "Provisioner",
    "UidTaken",
    "access_policy",
    "check_access_options",
    "get_provisioner",
    "provisioner_path",
]


def access_policy(cluster: Cluster) -> str:
    return str(cluster.options.get("access_policy") or "approval")


def provisioner_path(options: Mapping[str, Any]) -> str | None:
    """The dotted path of the cluster's provisioner, or None when it has none."""
    value = options.get("provisioner")
    if not value:
        return None
    value = str(value)
    return value if "." in value else str(settings.GPUC_PROVISIONERS[value])


def _provisioner_options(options: Mapping[str, Any]) -> dict[str, Any]:
    inherited = {"shared_root": options["shared_root"]} if options.get("shared_root") else {}
    own = options.get("provisioner_options") or {}
    return {**inherited, **own} if isinstance(own, Mapping) else inherited


def get_provisioner(cluster: Cluster) -> Provisioner | None:
    """The cluster's provisioner (cached per configuration), or None when it has none."""
    path = provisioner_path(cluster.options)
    if path is None:
        return None
    options = json.dumps(_provisioner_options(cluster.options), sort_keys=True)
    return _load(path, cluster.name, options)


@functools.cache
def _load(path: str, cluster: str, options_json: str) -> Provisioner:
    provisioner_class: type[Provisioner] = import_string(path)
    return provisioner_class(cluster=cluster, options=json.loads(options_json))


@receiver(setting_changed)
def _forget_provisioners(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("GPUC_"):
        _load.cache_clear()


def check_access_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with a cluster's access options (policy, provisioner and its options)."""
    problems: list[str] = []
    policy = options.get("access_policy", "approval")
    if policy not in ACCESS_POLICIES:
        problems.append(f"access_policy must be one of {', '.join(ACCESS_POLICIES)}.")
    own = options.get("provisioner_options")
    if own is not None and not isinstance(own, Mapping):
        problems.append("provisioner_options must be an object.")
    try:
        path = provisioner_path(options)
    except KeyError:
        known = ", ".join(sorted(settings.GPUC_PROVISIONERS))
        return [*problems, f"provisioner must be one of {known} or a dotted path."]
    if path is None:
        if policy == "auto":
            problems.append("access_policy auto needs a provisioner.")
        return problems
    try:
        provisioner_class = import_string(path)
    except ImportError as exc:
        return [*problems, f"provisioner {path} cannot be loaded ({exc})."]
    if not (isinstance(provisioner_class, type) and issubclass(provisioner_class, Provisioner)):
        return [*problems, f"provisioner {path} is not a Provisioner."]
    problems.extend(provisioner_class.check_options(_provisioner_options(options)))
    return problems
