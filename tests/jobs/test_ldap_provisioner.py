"""The ldap provisioner against the real OpenLDAP slapd of deploy/ldap: create, retry, racing
provisionings, removal, and identities it must never adopt or remove."""

from __future__ import annotations

import threading
import uuid

import pytest

from jobs.provisioning import Identity, NameTaken, ProvisionError, ProvisionUnavailable
from jobs.provisioning.ldap import LdapProvisioner
from tests.ldap_site import Corner

pytestmark = pytest.mark.ldap


def _provisioner(corner: Corner, **extra) -> LdapProvisioner:
    return LdapProvisioner(cluster="dir", options=corner.options(**extra))


def _identity(name: str) -> Identity:
    return Identity(username=name, key=uuid.uuid4().hex)


def test_create_adds_a_marked_posix_account_in_the_group(ldap_corner):
    provisioner = _provisioner(ldap_corner)
    identity = _identity("ada")

    made = provisioner.create(identity)

    entry = ldap_corner.entries()["ada"]
    assert made.uid >= 1000
    assert int(entry["uidNumber"][0]) == made.uid
    assert "posixAccount" in entry["objectClass"]
    assert entry["description"] == [f"gpuc-{identity.key}"]
    assert ldap_corner.members() == ["ada"]
    assert provisioner.lookup("ada").key == identity.key


def test_a_retry_of_the_same_identity_succeeds_with_the_same_uid_and_writes_nothing_new(
    ldap_corner,
):
    provisioner = _provisioner(ldap_corner)
    identity = _identity("ada")
    first = provisioner.create(identity)
    counter = ldap_corner.counter()

    again = provisioner.create(identity)

    assert again == first
    assert ldap_corner.counter() == counter  # no second uid number claimed
    assert list(ldap_corner.entries()) == ["ada"]
    assert ldap_corner.members() == ["ada"]


def test_a_name_made_for_another_request_or_by_hand_is_refused_and_left_alone(ldap_corner):
    provisioner = _provisioner(ldap_corner)
    provisioner.create(_identity("ada"))
    ldap_corner.add_foreign("carl", 31000)

    with pytest.raises(NameTaken):
        provisioner.create(_identity("ada"))
    with pytest.raises(NameTaken):
        provisioner.create(_identity("carl"))
    with pytest.raises(NameTaken):
        provisioner.remove(_identity("carl"))

    entries = ldap_corner.entries()
    assert sorted(entries) == ["ada", "carl"]
    assert "description" not in entries["carl"] or not entries["carl"]["description"]
    assert ldap_corner.members() == ["ada"]


def test_a_name_used_elsewhere_under_the_search_base_is_refused(ldap_corner):
    with ldap_corner.site.connect() as conn:
        elsewhere = f"ou=staff,{ldap_corner.people_dn}"
        assert conn.add(elsewhere, ["organizationalUnit"], {"ou": "staff"})
        assert conn.add(
            f"uid=dora,{elsewhere}",
            ["account", "posixAccount"],
            {
                "uid": "dora",
                "cn": "dora",
                "uidNumber": "31010",
                "gidNumber": "5000",
                "homeDirectory": "/home/dora",
            },
        )
    provisioner = _provisioner(ldap_corner)

    assert provisioner.lookup("dora") is not None
    with pytest.raises(NameTaken):
        provisioner.create(_identity("dora"))
    with pytest.raises(NameTaken):
        provisioner.remove(_identity("dora"))

    assert ldap_corner.members() == []


def test_concurrent_provisionings_never_share_a_uid_number(ldap_corner):
    provisioner = _provisioner(ldap_corner)
    names = [f"racer{i}" for i in range(12)]
    results: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def provision(name: str) -> None:
        try:
            start.wait()
            results[name] = provisioner.create(_identity(name)).uid
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=provision, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(set(results.values())) == len(names)
    in_directory = {n: int(e["uidNumber"][0]) for n, e in ldap_corner.entries().items()}
    assert in_directory == results
    assert ldap_corner.members() == sorted(names)


def test_a_uid_number_already_used_by_a_hand_made_entry_is_skipped(ldap_corner):
    provisioner = _provisioner(ldap_corner)
    taken = ldap_corner.counter()
    ldap_corner.add_foreign("old", taken)

    made = provisioner.create(_identity("ada"))

    assert made.uid != taken
    assert made.uid > taken


def test_remove_deletes_the_entry_and_the_group_membership_and_is_idempotent(ldap_corner):
    provisioner = _provisioner(ldap_corner)
    identity = _identity("ada")
    provisioner.create(identity)

    provisioner.remove(identity)
    provisioner.remove(identity)

    assert ldap_corner.entries() == {}
    assert ldap_corner.members() == []
    assert provisioner.lookup("ada") is None


@pytest.mark.parametrize("name", ["a*)(uid=*", "ada)(|(uid=*", "bob,ou=x", "x\\2a", "$(id)", "Ada"])
def test_names_with_ldap_or_shell_metacharacters_are_refused_before_the_directory(
    ldap_corner, name
):
    provisioner = _provisioner(ldap_corner)
    counter = ldap_corner.counter()

    with pytest.raises(ProvisionError):
        provisioner.create(Identity(username=name, key=uuid.uuid4().hex))

    assert ldap_corner.entries() == {}
    assert ldap_corner.members() == []
    assert ldap_corner.counter() == counter


def test_a_group_that_cannot_take_the_member_leaves_no_account_behind(ldap_corner):
    provisioner = _provisioner(
        ldap_corner, group_dn=f"cn=missing,{ldap_corner.people_dn.split(',', 1)[1]}"
    )

    with pytest.raises(ProvisionError):
        provisioner.create(_identity("ada"))

    assert ldap_corner.entries() == {}


def test_a_directory_that_does_not_answer_is_a_transient_failure(ldap_corner):
    provisioner = _provisioner(ldap_corner, url="ldap://127.0.0.1:1", timeout=2)

    with pytest.raises(ProvisionUnavailable):
        provisioner.create(_identity("ada"))


def test_check_options_names_missing_and_unsafe_settings(ldap_corner):
    assert LdapProvisioner.check_options(ldap_corner.options()) == []
    problems = LdapProvisioner.check_options(
        {"url": "http://x", "password": "secret", "uid_min": 10}
    )
    text = " ".join(problems)
    assert "people_dn is required" in text
    assert "ldap://" in text
    assert "Never store the bind password" in text
    assert "uid_min must be at least 1000" in text
