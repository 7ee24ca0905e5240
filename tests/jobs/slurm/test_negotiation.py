"""Version negotiation with the real slurmrestd of both clusters of deploy/slurm."""

from __future__ import annotations

import pytest

from jobs.backends.slurm import SlurmBackend
from tests.jobs.slurm.conftest import SlurmSite, both_slurms

pytestmark = pytest.mark.slurm

NEWEST = {"22.05": "v0.0.38", "24.11": "v0.0.42"}
on_2411 = pytest.mark.parametrize("slurm_site", ["24.11"], indirect=True)


@both_slurms
def test_auto_speaks_the_newest_version_the_real_slurmrestd_serves(slurm_site: SlurmSite):
    backend = SlurmBackend(name="real", options=slurm_site.options())

    assert backend.api.version == NEWEST[slurm_site.version]
    assert backend.api.accounting
    assert backend.check_cluster() == []


@on_2411
def test_a_version_the_real_2411_no_longer_serves_is_reported_with_what_it_offers(
    slurm_site: SlurmSite,
):
    backend = SlurmBackend(name="real", options=slurm_site.options(api_version="v0.0.38"))

    [problem] = backend.check_cluster()

    assert "does not serve the pinned api_version v0.0.38" in problem
    assert "it offers: v0.0.40, v0.0.41, v0.0.42" in problem


@on_2411
@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41", "v0.0.42"])
def test_every_version_the_real_2411_serves_lists_jobs_and_reads_accounting(
    slurm_site: SlurmSite, version: str
):
    backend = SlurmBackend(name="real", options=slurm_site.options(api_version=version))

    listing = backend.ctld_call("GET", "/jobs", user="gpuc-test1") or {}
    accounting = backend.dbd_call(
        "GET", "/jobs", user="gpuc-test1", params={"step": ["1", "2"], "skip_steps": "true"}
    )

    assert isinstance(listing.get("jobs"), list)
    assert isinstance((accounting or {}).get("jobs"), list)
