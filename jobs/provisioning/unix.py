"""The `unix` provisioner: Unix users on the cluster host (the development cluster), made by
ONE fixed privileged helper, deploy/slurm/provision-user (installed by deploy/slurm/up.sh as
/usr/local/sbin/gpuc-provision-user), run with an argument list and never through a shell.

Options (`provisioner_options`):
    helper        the helper's absolute path (default /usr/local/sbin/gpuc-provision-user)
    sudo          run it through `sudo -n` (default: when the portal does not run as root)
    shared_root   the shared filesystem's root (default: the cluster's shared_root); the user's
                  folder <shared_root>/<user> is created with the user
    timeout       seconds to wait for the helper (default 60)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.provisioning.base import (
    Existing,
    Identity,
    NameTaken,
    Provisioned,
    Provisioner,
    ProvisionError,
    ProvisionUnavailable,
    UidTaken,
    check_identity,
    key_of,
)

DEFAULT_HELPER = "/usr/local/sbin/gpuc-provision-user"
PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
EXIT_NAME_TAKEN = 3
EXIT_UID_TAKEN = 4


class UnixProvisioner(Provisioner):
    accepts_uid = True

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = []
        helper = options.get("helper", DEFAULT_HELPER)
        if not isinstance(helper, str) or not PATH_RE.match(helper):
            problems.append("provisioner_options.helper must be an absolute path.")
        root = options.get("shared_root")
        if (
            not isinstance(root, str)
            or not PATH_RE.match(root)
            or ".." in root.split("/")
            or root.rstrip("/") == ""
        ):
            problems.append(
                "The unix provisioner needs shared_root (the cluster's or its own): an absolute "
                "path of plain characters, not /."
            )
        if "sudo" in options and not isinstance(options["sudo"], bool):
            problems.append("provisioner_options.sudo must be true or false.")
        timeout = options.get("timeout", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            problems.append("provisioner_options.timeout must be a positive number.")
        return problems

    @property
    def shared_root(self) -> str:
        return str(self.options["shared_root"]).rstrip("/")

    def _run(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        helper = str(self.options.get("helper", DEFAULT_HELPER))
        use_sudo = self.options.get("sudo", os.geteuid() != 0)
        argv = [helper, *args]
        if use_sudo:
            argv = [shutil.which("sudo") or "/usr/bin/sudo", "-n", *argv]
        try:
            return subprocess.run(  # noqa: S603 (a fixed helper and checked arguments, no shell)
                argv,
                capture_output=True,
                text=True,
                timeout=float(self.options.get("timeout", 60)),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ProvisionUnavailable(f"the provisioning helper timed out ({exc})") from exc
        except OSError as exc:
            raise ProvisionError(f"the provisioning helper cannot run: {exc}") from exc

    @staticmethod
    def _problem(result: subprocess.CompletedProcess[str]) -> str:
        text = (result.stderr or result.stdout).strip().splitlines()
        return (text[-1] if text else f"exit code {result.returncode}").removeprefix(
            "gpuc-provision-user: "
        )

    def lookup(self, username: str) -> Existing | None:
        check_identity(Identity(username=username, key="0" * 32))
        result = self._run(["show", username])
        if result.returncode == EXIT_NAME_TAKEN:  # a reserved system name
            return Existing(username=username, uid=None, key="")
        if result.returncode != 0:
            raise ProvisionError(self._problem(result))
        words = result.stdout.split()
        if words[:1] == ["absent"]:
            return None
        if len(words) != 3 or words[0] != "user":
            raise ProvisionError(f"unexpected answer from the helper: {result.stdout!r}")
        return Existing(username=username, uid=int(words[1]), key=key_of(words[2]))

    def create(self, identity: Identity) -> Provisioned:
        check_identity(identity)
        args = ["create", identity.username, identity.key, self.shared_root]
        if identity.uid is not None:
            args.append(str(identity.uid))
        result = self._run(args)
        if result.returncode == EXIT_NAME_TAKEN:
            raise NameTaken(self._problem(result))
        if result.returncode == EXIT_UID_TAKEN:
            raise UidTaken(self._problem(result))
        if result.returncode != 0:
            raise ProvisionError(self._problem(result))
        words = result.stdout.split()
        if (
            len(words) != 3
            or words[0] not in ("created", "exists")
            or words[1] != identity.username
        ):
            raise ProvisionError(f"unexpected answer from the helper: {result.stdout!r}")
        uid = int(words[2])
        if uid < 1000:  # the helper refuses these; never trust one anyway
            raise ProvisionError(f"{identity.username} has uid {uid} (< 1000)")
        return Provisioned(username=identity.username, uid=uid)

    def remove(self, identity: Identity) -> None:
        check_identity(identity)
        result = self._run(["remove", identity.username, identity.key, self.shared_root])
        if result.returncode == EXIT_NAME_TAKEN:
            raise NameTaken(self._problem(result))
        if result.returncode != 0:
            raise ProvisionError(self._problem(result))
