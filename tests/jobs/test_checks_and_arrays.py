"""The backend system check, array specifications and the orphaned-hold checker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from jobs.arrays import parse_array
from jobs.models import Job
from jobs.reconcile import orphaned_job_holds
from portal.checks import check_cluster_backends
from quotas.models import Hold
from quotas.services import ledger_hold
from tests import factories


def _ids(errors) -> list[str]:
    return sorted(e.id for e in errors)


def test_the_system_check_accepts_valid_clusters(cluster, settings):
    settings.GPUC_LOCAL_BACKEND_ENABLED = True
    factories.ClusterFactory(name="dev", kind="local", options={"root": "/tmp/gpuc-check"})
    assert check_cluster_backends() == []


def test_the_system_check_names_each_broken_cluster(db, settings):
    settings.GPUC_LOCAL_BACKEND_ENABLED = False
    factories.ClusterFactory(name="typo", backend="jobs.backends.nowhere.Backend")
    factories.ClusterFactory(name="not-a-backend", backend="quotas.models.Cluster")
    factories.ClusterFactory(name="bad-options", options={"gpus": -3, "clock": "sundial"})
    factories.ClusterFactory(name="dev", kind="local", options={})
    factories.ClusterFactory(name="off", backend="jobs.backends.nowhere.B", enabled=False)
    errors = check_cluster_backends()
    assert _ids(errors) == [
        "portal.E101",
        "portal.E102",
        "portal.E103",
        "portal.E103",
        "portal.E104",
    ]
    assert any("'typo'" in e.msg for e in errors)
    assert not any("'off'" in e.msg for e in errors)


@pytest.mark.parametrize(
    ("spec", "size", "throttle"),
    [
        ("0-99%10", 100, 10),
        ("1,3,5", 3, None),
        ("0-15:2", 8, None),
        ("7", 1, None),
        ("1-3,2-4", 4, None),
    ],
)
def test_array_specs_are_parsed_to_their_task_count(spec, size, throttle):
    parsed = parse_array(spec)
    assert (parsed.size, parsed.max_parallel) == (size, throttle)


@pytest.mark.parametrize("spec", ["", "a-b", "5-1", "1-10:0", "0-99%0", "1;2", "-1", "0-20000"])
def test_bad_array_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_array(spec)


def test_holds_of_finalised_or_missing_jobs_are_reported_as_orphaned(
    submit, sim_cluster, tenant, cluster
):
    live = submit(sim_cluster, name="live")
    done = submit(sim_cluster, name="done")
    Job.objects.filter(pk=done.pk).update(finalized_at=timezone.now(), state="completed")
    stray = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(1),
        key="job:00000000-0000-0000-0000-000000000001",
        job_uuid="00000000-0000-0000-0000-000000000001",
    )  # fmt: skip
    Hold.objects.filter(pk=stray.pk).update(created_at=timezone.now() - timedelta(hours=2))
    holds = list(Hold.objects.filter(state=Hold.State.OPEN))
    orphans = orphaned_job_holds(holds)
    assert set(orphans) == {done.hold_id, stray.pk}
    assert live.hold_id not in orphans
