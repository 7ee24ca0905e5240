"""tests/conftest.refuse_skip_in_ci: under CI=true a skipped test fails the run (nothing that
needs PostgreSQL, Slurm, LDAP, a browser or root may quietly not run), but for the one skip CI
accepts; outside CI a skip stays a skip."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.conftest import CI_ACCEPTED_SKIP, refuse_skip_in_ci


def _skipped(reason: str) -> SimpleNamespace:
    return SimpleNamespace(
        outcome="skipped", skipped=True, longrepr=("tests/x.py", 3, f"Skipped: {reason}")
    )


def test_under_ci_a_skipped_test_fails_naming_why_it_skipped(monkeypatch):
    monkeypatch.setenv("CI", "true")
    report = _skipped("needs PostgreSQL row locks")

    refuse_skip_in_ci(report)

    assert report.outcome == "failed"
    assert "needs PostgreSQL row locks" in report.longrepr


@pytest.mark.parametrize("ci", ["true", ""])
def test_the_accepted_skip_and_any_skip_outside_ci_stay_skips(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    accepted, other = _skipped(f"{CI_ACCEPTED_SKIP}24.11"), _skipped("needs root")

    refuse_skip_in_ci(accepted)
    if not ci:
        refuse_skip_in_ci(other)

    assert accepted.outcome == "skipped"
    assert other.outcome == "skipped"


def test_an_expected_failure_is_left_alone(monkeypatch):
    monkeypatch.setenv("CI", "true")
    report = _skipped("known")
    report.wasxfail = "known"

    refuse_skip_in_ci(report)

    assert report.outcome == "skipped"
