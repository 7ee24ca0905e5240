"""Cluster access options: every backend accepts them, the system check validates them, and
provisioners load per cluster like the backends."""

from __future__ import annotations

import pytest

from jobs.backends.kubernetes import KubernetesBackend
from jobs.backends.local import LocalBackend
from jobs.backends.simulated import SimulatedBackend
from jobs.backends.slurm import SlurmBackend
from jobs.provisioning import check_access_options, get_provisioner
from jobs.provisioning.ldap import LdapProvisioner
from jobs.provisioning.unix import UnixProvisioner
from portal.checks import check_cluster_backends
from tests import factories

ACCESS = {
    "access_policy": "auto",
    "provisioner": "unix",
    "provisioner_options": {"sudo": False, "timeout": 30},
}
SLURM = {"url": "http://127.0.0.1:6820", "jwt_key_file": "/k", "shared_root": "/srv/shared"}
KUBERNETES = {"host": "https://k8s:6443", "token_env": "K8S_TOKEN", "default_image": "python:3"}


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        (SlurmBackend, SLURM),
        (KubernetesBackend, KUBERNETES),
        (LocalBackend, {"root": "/tmp/x"}),
        (SimulatedBackend, {}),
    ],
)
def test_every_backend_accepts_the_access_options(backend, options):
    assert backend.check_options(options) == []
    assert backend.check_options({**options, **ACCESS}) == []


def test_slurm_still_refuses_options_it_does_not_know():
    problems = SlurmBackend.check_options({**SLURM, **ACCESS, "acess_policy": "auto"})
    assert problems == ["Unknown Slurm options: acess_policy."]


def test_access_options_are_checked(settings):
    assert check_access_options({}) == []
    assert check_access_options({**ACCESS, "shared_root": "/srv/shared"}) == []
    problems = " ".join(
        check_access_options({"access_policy": "sometimes"})
        + check_access_options({"access_policy": "auto"})
        + check_access_options({"provisioner": "kerberos"})
        + check_access_options({"provisioner": "unix"})
        + check_access_options({"provisioner": "jobs.models.Job"})
        + check_access_options({"provisioner": "ldap", "provisioner_options": {"url": "x"}})
    )
    assert "access_policy must be one of approval, auto" in problems
    assert "access_policy auto needs a provisioner" in problems
    assert "provisioner must be one of ldap, unix or a dotted path" in problems
    assert "The unix provisioner needs shared_root" in problems
    assert "is not a Provisioner" in problems
    assert "provisioner_options.bind_dn is required" in problems


def test_the_system_check_names_a_cluster_with_a_broken_provisioner(db):
    factories.ClusterFactory(
        name="dir", kind="simulated", options={"access_policy": "auto", "provisioner": "nis"}
    )

    errors = check_cluster_backends()

    assert [e.id for e in errors] == ["portal.E106"]
    assert "Cluster 'dir'" in errors[0].msg


def test_provisioners_load_per_cluster_cached_and_inherit_the_shared_root(db):
    cluster = factories.ClusterFactory(
        name="s", kind="simulated", options={"shared_root": "/srv/shared", **ACCESS}
    )
    plain = factories.ClusterFactory(name="p", kind="simulated", options={})

    provisioner = get_provisioner(cluster)

    assert isinstance(provisioner, UnixProvisioner)
    assert provisioner is get_provisioner(cluster)
    assert provisioner.shared_root == "/srv/shared"
    assert get_provisioner(plain) is None
    assert UnixProvisioner.accepts_uid and not LdapProvisioner.accepts_uid
