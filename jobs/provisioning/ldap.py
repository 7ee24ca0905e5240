"""The `ldap` provisioner: posixAccount entries in a facility's directory, plus membership of
one group (posixGroup memberUid, or groupOfNames member), through ldap3.

uid numbers come from a counter entry (an attribute `uidNumber` holding the next free number).
A provisioner claims number N by ONE modify that deletes the value N and adds N+1: if another
claimed N first, the value N is gone and the modify fails (noSuchAttribute), so it reads the
counter again. Two concurrent provisionings therefore never get the same number; a number
that some entry already uses (made by hand) is skipped.

Options (`provisioner_options`):
    url                 ldap:// or ldaps:// address of the directory
    bind_dn             who the portal binds as
    password_file       a file holding the bind password (or password_env: a variable name)
    people_dn           where accounts live (uid=<name>,<people_dn>)
    search_base         where names and uid numbers must be unique (default: the parent of
                        people_dn); a name found anywhere below it is never reused
    group_dn            the group every provisioned account joins
    group_attribute     memberUid (posixGroup, default) or member (groupOfNames)
    counter_dn          the uid counter entry
    gid_number          the accounts' primary group number
    home_root           homeDirectory is <home_root>/<name> (default: shared_root or /home)
    login_shell         default /bin/bash
    uid_min             the lowest uid number handed out (default 1000, never lower)
    timeout             seconds for connecting and for each answer (default 10)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jobs.provisioning.base import (
    UID_MAX,
    UID_MIN,
    Existing,
    Identity,
    NameTaken,
    Provisioned,
    Provisioner,
    ProvisionError,
    ProvisionUnavailable,
    check_identity,
    key_of,
)

NO_SUCH_OBJECT = 32
NO_SUCH_ATTRIBUTE = 16
ATTRIBUTE_OR_VALUE_EXISTS = 20
ENTRY_ALREADY_EXISTS = 68
CLAIM_ATTEMPTS = 200
REQUIRED = ("url", "bind_dn", "people_dn", "group_dn", "counter_dn", "gid_number")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _all(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _first(value: Any) -> Any:
    values = _all(value)
    return values[0] if values else None


class LdapProvisioner(Provisioner):
    accepts_uid = False  # the directory hands out uid numbers from its counter

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = [
            f"provisioner_options.{key} is required for the ldap provisioner."
            for key in REQUIRED
            if not options.get(key)
        ]
        url = options.get("url")
        if url and not str(url).startswith(("ldap://", "ldaps://")):
            problems.append("provisioner_options.url must start with ldap:// or ldaps://.")
        if "password" in options:
            problems.append(
                "Never store the bind password in the cluster options: name it with "
                "password_file or password_env."
            )
        sources = [k for k in ("password_file", "password_env") if options.get(k)]
        if len(sources) != 1:
            problems.append(
                "Give exactly one of provisioner_options.password_file or password_env."
            )
        env = options.get("password_env")
        if env and (not isinstance(env, str) or not ENV_RE.match(env)):
            problems.append("provisioner_options.password_env must name an environment variable.")
        if options.get("group_attribute", "memberUid") not in ("memberUid", "member"):
            problems.append("provisioner_options.group_attribute must be memberUid or member.")
        for key in ("gid_number", "uid_min"):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"provisioner_options.{key} must be a whole number.")
        uid_min = options.get("uid_min", UID_MIN)
        if isinstance(uid_min, int) and uid_min < UID_MIN:
            problems.append(f"provisioner_options.uid_min must be at least {UID_MIN}.")
        return problems

    # --- connection ------------------------------------------------------------------------

    def _password(self) -> str:
        if self.options.get("password_file"):
            with open(str(self.options["password_file"])) as handle:
                return handle.read().strip()
        return os.environ.get(str(self.options.get("password_env")), "")

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        import ldap3
        from ldap3.core import exceptions as ldap_errors

        timeout = max(1, int(self.options.get("timeout", 10)))
        try:
            server = ldap3.Server(
                str(self.options["url"]), connect_timeout=timeout, get_info=ldap3.NONE
            )
            conn = ldap3.Connection(
                server,
                user=str(self.options["bind_dn"]),
                password=self._password(),
                receive_timeout=timeout,
                raise_exceptions=False,
                auto_bind=ldap3.AUTO_BIND_NO_TLS,
            )
        except (ldap_errors.LDAPSocketOpenError, ldap_errors.LDAPCommunicationError) as exc:
            raise ProvisionUnavailable(f"the directory does not answer: {exc}") from exc
        except ldap_errors.LDAPBindError as exc:
            raise ProvisionError(f"the portal cannot bind to the directory: {exc}") from exc
        except OSError as exc:
            raise ProvisionError(f"the directory's bind password cannot be read: {exc}") from exc
        try:
            yield conn
        except (ldap_errors.LDAPSocketOpenError, ldap_errors.LDAPCommunicationError) as exc:
            raise ProvisionUnavailable(f"the directory stopped answering: {exc}") from exc
        finally:
            conn.unbind()

    @staticmethod
    def _fail(conn: Any, what: str) -> ProvisionError:
        result = conn.result or {}
        return ProvisionError(f"{what}: {result.get('description')} {result.get('message', '')}")

    # --- reads -----------------------------------------------------------------------------

    def _dn(self, username: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return f"uid={escape_rdn(username)},{self.options['people_dn']}"

    def _search_base(self) -> str:
        people = str(self.options["people_dn"])
        return str(self.options.get("search_base") or people.split(",", 1)[-1] or people)

    def _find(self, conn: Any, username: str) -> Existing | None:
        """Any entry with this uid anywhere under the search base (not only the portal's)."""
        from ldap3 import SUBTREE
        from ldap3.utils.conv import escape_filter_chars

        ok = conn.search(
            self._search_base(),
            f"(uid={escape_filter_chars(username)})",
            search_scope=SUBTREE,
            attributes=["uidNumber", "description"],
        )
        if not ok:
            if conn.result.get("result") in (0, NO_SUCH_OBJECT):
                return None
            raise self._fail(conn, f"searching for {username}")
        entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
        if not entries:
            return None
        if len(entries) > 1 or entries[0]["dn"].lower() != self._dn(username).lower():
            return Existing(username=username, uid=None, key="")  # someone else's, elsewhere
        attributes = entries[0]["attributes"]
        uid = _first(attributes.get("uidNumber"))
        keys = [key_of(str(d)) for d in _all(attributes.get("description"))]
        return Existing(
            username=username,
            uid=int(uid) if uid is not None and str(uid).isdigit() else None,
            key=next((k for k in keys if k), ""),
        )

    def lookup(self, username: str) -> Existing | None:
        check_identity(Identity(username=username, key="0" * 32))
        with self._connection() as conn:
            return self._find(conn, username)

    def _uid_in_use(self, conn: Any, number: int) -> bool:
        from ldap3 import SUBTREE

        ok = conn.search(
            self._search_base(),
            f"(&(objectClass=posixAccount)(uidNumber={int(number)}))",
            search_scope=SUBTREE,
            attributes=["uid"],
        )
        if not ok and conn.result.get("result") != 0:
            raise self._fail(conn, "checking uid numbers")
        return any(r.get("type") == "searchResEntry" for r in conn.response or [])

    # --- the uid counter -------------------------------------------------------------------

    def _claim_uid(self, conn: Any) -> int:
        """Claim the next free uid number from the counter (compare-and-swap, see the top)."""
        from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE

        counter = str(self.options["counter_dn"])
        floor = max(int(self.options.get("uid_min", UID_MIN)), UID_MIN)
        for _ in range(CLAIM_ATTEMPTS):
            if not conn.search(counter, "(objectClass=*)", BASE, attributes=["uidNumber"]):
                raise self._fail(conn, f"reading the uid counter {counter}")
            value = _first(conn.response[0]["attributes"].get("uidNumber"))
            if value is None or not str(value).isdigit():
                raise ProvisionError(f"the uid counter {counter} holds no number")
            current = int(value)
            number = max(current, floor)
            if number >= UID_MAX:
                raise ProvisionError(f"the directory's uid counter reached {UID_MAX}")
            swapped = conn.modify(
                counter,
                {
                    "uidNumber": [
                        (MODIFY_DELETE, [str(current)]),
                        (MODIFY_ADD, [str(number + 1)]),
                    ]
                },
            )
            if not swapped:
                if conn.result.get("result") == NO_SUCH_ATTRIBUTE:
                    continue  # another provisioning claimed `current` first
                raise self._fail(conn, "claiming a uid number")
            if not self._uid_in_use(conn, number):
                return number
        raise ProvisionError("could not claim a free uid number (the counter is contended)")

    # --- writes ----------------------------------------------------------------------------

    def _member_value(self, username: str) -> tuple[str, str]:
        attribute = str(self.options.get("group_attribute", "memberUid"))
        return attribute, (username if attribute == "memberUid" else self._dn(username))

    def _join_group(self, conn: Any, username: str) -> None:
        from ldap3 import MODIFY_ADD

        attribute, value = self._member_value(username)
        ok = conn.modify(str(self.options["group_dn"]), {attribute: [(MODIFY_ADD, [value])]})
        if not ok and conn.result.get("result") != ATTRIBUTE_OR_VALUE_EXISTS:
            raise self._fail(conn, f"adding {username} to {self.options['group_dn']}")

    def _leave_group(self, conn: Any, username: str) -> None:
        from ldap3 import MODIFY_DELETE

        attribute, value = self._member_value(username)
        ok = conn.modify(str(self.options["group_dn"]), {attribute: [(MODIFY_DELETE, [value])]})
        if not ok and conn.result.get("result") != NO_SUCH_ATTRIBUTE:
            raise self._fail(conn, f"removing {username} from {self.options['group_dn']}")

    def _home(self, username: str) -> str:
        root = self.options.get("home_root") or self.options.get("shared_root") or "/home"
        return f"{str(root).rstrip('/')}/{username}"

    def create(self, identity: Identity) -> Provisioned:
        check_identity(identity)
        if identity.uid is not None:
            raise ProvisionError("this directory allocates uid numbers itself")
        with self._connection() as conn:
            existing = self._find(conn, identity.username)
            if existing is None:
                uid = self._claim_uid(conn)
                added = conn.add(
                    self._dn(identity.username),
                    ["account", "posixAccount"],
                    {
                        "uid": identity.username,
                        "cn": identity.username,
                        "uidNumber": str(uid),
                        "gidNumber": str(self.options["gid_number"]),
                        "homeDirectory": self._home(identity.username),
                        "loginShell": str(self.options.get("login_shell", "/bin/bash")),
                        "description": identity.mark,
                    },
                )
                if not added:
                    if conn.result.get("result") != ENTRY_ALREADY_EXISTS:
                        raise self._fail(conn, f"adding {identity.username}")
                    # Lost a race for the name, or an entry the search cannot see is there.
                    existing = self._find(conn, identity.username) or Existing(
                        username=identity.username, uid=None, key=""
                    )
            if existing is not None:
                if existing.key != identity.key or existing.uid is None:
                    raise NameTaken(
                        f"{identity.username} already exists in the directory and was not "
                        "created by the portal for this request"
                    )
                uid = existing.uid
            try:
                self._join_group(conn, identity.username)
            except ProvisionError:
                if existing is None:  # ours, made just now: leave nothing behind
                    conn.delete(self._dn(identity.username))
                raise
        return Provisioned(username=identity.username, uid=uid)

    def remove(self, identity: Identity) -> None:
        check_identity(identity)
        with self._connection() as conn:
            existing = self._find(conn, identity.username)
            if existing is not None and existing.key != identity.key:
                raise NameTaken(
                    f"{identity.username} in the directory was not created by the portal for "
                    "this key; not removed"
                )
            self._leave_group(conn, identity.username)
            deleted = existing is None or conn.delete(self._dn(identity.username))
            if not deleted and conn.result.get("result") != NO_SUCH_OBJECT:
                raise self._fail(conn, f"deleting {identity.username}")
