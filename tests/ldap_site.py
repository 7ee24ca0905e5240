"""The real OpenLDAP slapd of deploy/ldap/up.sh (its env file), and a private corner of it per
test: an organizational unit for the accounts and a group of its own, removed afterwards.

Outside CI the LDAP tests skip with a message when slapd does not answer; in CI (CI set) they
fail instead: run deploy/ldap/up.sh (make ldap-up) first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

ENV_FILE = Path(os.environ.get("GPUC_LDAP_ENV", "/var/lib/gpucommons-ldap/env"))


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the LDAP tests: start deploy/ldap/up.sh)")
    pytest.skip(f"{message}; start it with deploy/ldap/up.sh to run the LDAP tests")


@dataclass(frozen=True)
class LdapSite:
    url: str
    bind_dn: str
    password_file: str
    suffix: str
    counter_dn: str
    gid_number: int

    def connect(self) -> ldap3.Connection:
        """An admin connection of the test's own (not the provisioner's), for checks."""
        password = Path(self.password_file).read_text().strip()
        return ldap3.Connection(
            ldap3.Server(self.url, get_info=ldap3.NONE),
            user=self.bind_dn,
            password=password,
            auto_bind=True,
            raise_exceptions=False,
        )


@dataclass(frozen=True)
class Corner:
    """One test's accounts OU and group, and the provisioner options that point at them."""

    site: LdapSite
    people_dn: str
    group_dn: str

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "url": self.site.url,
            "bind_dn": self.site.bind_dn,
            "password_file": self.site.password_file,
            "people_dn": self.people_dn,
            "search_base": self.people_dn,  # this test's corner only
            "group_dn": self.group_dn,
            "counter_dn": self.site.counter_dn,
            "gid_number": self.site.gid_number,
            "home_root": "/home",
            **extra,
        }

    def entries(self) -> dict[str, dict[str, Any]]:
        """uid -> attributes of every entry under the OU."""
        with self.site.connect() as conn:
            conn.search(
                self.people_dn,
                "(objectClass=*)",
                ldap3.LEVEL,
                attributes=["uid", "uidNumber", "description", "objectClass"],
            )
            return {str(e["attributes"]["uid"][0]): e["attributes"] for e in conn.response}

    def members(self) -> list[str]:
        with self.site.connect() as conn:
            conn.search(self.group_dn, "(objectClass=*)", ldap3.BASE, attributes=["memberUid"])
            return sorted(conn.response[0]["attributes"].get("memberUid") or [])

    def counter(self) -> int:
        with self.site.connect() as conn:
            conn.search(
                self.site.counter_dn, "(objectClass=*)", ldap3.BASE, attributes=["uidNumber"]
            )
            return int(conn.response[0]["attributes"]["uidNumber"][0])

    def add_foreign(self, name: str, uid: int) -> None:
        """An account made by hand (not by the portal: no mark)."""
        with self.site.connect() as conn:
            assert conn.add(
                f"uid={name},{self.people_dn}",
                ["account", "posixAccount"],
                {
                    "uid": name,
                    "cn": name,
                    "uidNumber": str(uid),
                    "gidNumber": str(self.site.gid_number),
                    "homeDirectory": f"/home/{name}",
                },
            ), conn.result


@pytest.fixture(scope="session")
def ldap_site() -> LdapSite:
    if not ENV_FILE.is_file():
        _unavailable(f"No LDAP env file at {ENV_FILE}")
    env = dict(
        line.split("=", 1)
        for line in ENV_FILE.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    site = LdapSite(
        url=env["LDAP_URL"],
        bind_dn=env["LDAP_BIND_DN"],
        password_file=env["LDAP_PASSWORD_FILE"],
        suffix=env["LDAP_SUFFIX"],
        counter_dn=env["LDAP_COUNTER_DN"],
        gid_number=int(env["LDAP_GID_NUMBER"]),
    )
    try:
        site.connect().unbind()
    except Exception as exc:
        _unavailable(f"slapd at {site.url} does not answer ({exc})")
    return site


@pytest.fixture
def ldap_corner(ldap_site: LdapSite) -> Iterator[Corner]:
    tag = uuid.uuid4().hex[:12]
    corner = Corner(
        site=ldap_site,
        people_dn=f"ou=t{tag},ou=people,{ldap_site.suffix}",
        group_dn=f"cn=t{tag},ou=groups,{ldap_site.suffix}",
    )
    with ldap_site.connect() as conn:
        assert conn.add(corner.people_dn, ["organizationalUnit"], {"ou": f"t{tag}"}), conn.result
        assert conn.add(
            corner.group_dn,
            ["posixGroup"],
            {"cn": f"t{tag}", "gidNumber": str(ldap_site.gid_number)},
        ), conn.result
    yield corner
    with ldap_site.connect() as conn:
        conn.search(corner.people_dn, "(objectClass=*)", ldap3.SUBTREE, attributes=[])
        for dn in sorted((e["dn"] for e in conn.response), key=len, reverse=True):
            conn.delete(dn)  # the deepest first; the corner's OU itself last
        conn.delete(corner.group_dn)
