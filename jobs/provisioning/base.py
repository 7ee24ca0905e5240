"""The provisioner contract: how the portal creates and removes a member's identity on a
cluster (a Unix user on the cluster host, an entry in a facility directory).

Plain frozen dataclasses cross the boundary, never ORM objects. Every identity the portal
creates carries a mark (`gpuc-<key>`, the key of the access request that made it): an identity
without the portal's mark, or with another key, is never adopted, changed or removed.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Unix and Slurm user names: no shell, LDAP-filter or DN metacharacters can pass this.
USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
KEY_RE = re.compile(r"^[0-9a-f]{32}$")
UID_MIN = 1000
UID_MAX = 60000  # above: nobody (65534) and the ranges systemd reserves
MARK_PREFIX = "gpuc-"


class ProvisionError(Exception):
    """A permanent failure: nothing was left behind; retrying will not help."""


class NameTaken(ProvisionError):
    """The name exists on the cluster and was not created by the portal for this request."""


class UidTaken(ProvisionError):
    """The asked-for uid number belongs to someone else."""


class ProvisionUnavailable(Exception):
    """The host or directory did not answer: try again later."""


@dataclass(frozen=True)
class Identity:
    """What to create: `key` marks it as the portal's; `uid` None lets the provisioner choose."""

    username: str
    key: str
    uid: int | None = None

    @property
    def mark(self) -> str:
        return f"{MARK_PREFIX}{self.key}"


@dataclass(frozen=True)
class Provisioned:
    username: str
    uid: int


@dataclass(frozen=True)
class Existing:
    """An identity found on the cluster: `key` is the portal's key it carries ("" = none)."""

    username: str
    uid: int | None
    key: str

    @property
    def is_portal(self) -> bool:
        return bool(self.key)


def check_identity(identity: Identity) -> None:
    """Raise ProvisionError unless the name, key and uid are safe to hand to the cluster."""
    if not USERNAME_RE.match(identity.username):
        raise ProvisionError(f"'{identity.username}' is not a valid cluster user name")
    if not KEY_RE.match(identity.key):
        raise ProvisionError("the identity key must be 32 hexadecimal digits")
    if identity.uid is not None and not UID_MIN <= identity.uid < UID_MAX:
        raise ProvisionError(f"uid {identity.uid} is outside {UID_MIN}..{UID_MAX - 1}")


def key_of(mark: str) -> str:
    """The key in a mark like gpuc-<key>; "" when it is not the portal's mark."""
    if mark.startswith(MARK_PREFIX) and KEY_RE.match(mark[len(MARK_PREFIX) :]):
        return mark[len(MARK_PREFIX) :]
    return ""


class Provisioner(abc.ABC):
    """Creates and removes identities on one cluster. Instances are cached per configuration."""

    # Whether a requester may ask for a uid number (a directory allocates its own).
    accepts_uid: bool = False

    def __init__(self, *, cluster: str, options: Mapping[str, Any]) -> None:
        self.cluster = cluster
        self.options = dict(options)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with the provisioner options, as sentences (empty when valid)."""
        return []

    @abc.abstractmethod
    def lookup(self, username: str) -> Existing | None:
        """The identity called `username` on the cluster, or None if there is none."""

    @abc.abstractmethod
    def create(self, identity: Identity) -> Provisioned:
        """Create the identity; one already there with the same mark is a success (a retry).
        Raises NameTaken if the name exists otherwise; on any failure nothing is left behind."""

    @abc.abstractmethod
    def remove(self, identity: Identity) -> None:
        """Remove the identity if it carries this mark; absent is fine; NameTaken if the name
        belongs to someone else (never removed)."""
