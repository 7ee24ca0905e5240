"""Reading direct work out of slurmdbd records (no cluster): the shapes the 22.05 (v0.0.38)
and 24.11 (v0.0.42) daemons of deploy/slurm answer GET /slurmdb/<version>/jobs with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jobs.backends.slurm import records

START = 1796527726


def _n(value: int | None) -> dict[str, Any]:
    return {"set": value is not None, "infinite": False, "number": value or 0}


def raw38(job_id: int, **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "job_id": job_id,
        "account": "gpuc-folding",
        "user": "gpuc-test1",
        "name": "wrap",
        "partition": "gpu",
        "array": {"job_id": 0, "task_id": None},
        "het": {"job_id": 0, "job_offset": None},
        "state": {"current": "COMPLETED", "reason": "None"},
        "time": {
            "elapsed": 2,
            "end": START + 2,
            "start": START,
            "submission": START - 2,
            "limit": 1440,
        },
        "exit_code": {"status": "SUCCESS", "return_code": 0},
        "comment": {"administrator": None, "job": None, "system": None},
        "tres": {
            "allocated": [
                {"type": "cpu", "name": None, "count": 2},
                {"type": "mem", "name": None, "count": 128},
                {"type": "gres", "name": "gpu", "count": 1},
                {"type": "gres", "name": "gpu:h100", "count": 1},
            ]
        },
    }
    record.update(over)
    return record


def raw42(job_id: int, **over: Any) -> dict[str, Any]:
    record = raw38(job_id)
    record.update(
        {
            "array": {"job_id": 0, "task_id": _n(None), "task": ""},
            "het": {"job_id": 0, "job_offset": _n(None)},
            "state": {"current": ["COMPLETED"], "reason": "None"},
            "time": {**record["time"], "limit": _n(1440)},
            "exit_code": {
                "status": ["SUCCESS"],
                "return_code": _n(0),
                "signal": {"id": _n(None), "name": ""},
            },
            "comment": {"administrator": "", "job": "", "system": ""},
        }
    )
    record.update(over)
    return record


@pytest.mark.parametrize("raw", [raw38, raw42], ids=["v0.0.38", "v0.0.42"])
def test_a_finished_job_under_a_managed_account_reads_as_a_direct_record(raw):
    [found] = records.direct_from_dbd(records.dbd_jobs({"jobs": [raw(31)]}), {"gpuc-folding"})

    assert (found.backend_id, found.account, found.cluster_user, found.name) == (
        "31",
        "gpuc-folding",
        "gpuc-test1",
        "wrap",
    )
    assert (found.state, found.exit_code, found.portal_uuid) == ("completed", 0, "")
    usage = found.usage
    assert (usage.elapsed_seconds, usage.cpus, usage.memory_mb, usage.gpus, usage.gpu_type) == (
        2,
        2,
        128,
        1,
        "h100",
    )
    assert usage.started_at == datetime.fromtimestamp(START, tz=UTC)
    assert found.submitted_at == datetime.fromtimestamp(START - 2, tz=UTC)
    assert usage.raw["time_limit_minutes"] == 1440 and usage.raw["partition"] == "gpu"


@pytest.mark.parametrize("raw", [raw38, raw42], ids=["v0.0.38", "v0.0.42"])
def test_array_tasks_and_het_components_are_records_of_their_own(raw):
    task = {"job_id": 24, "task_id": 1} if raw is raw38 else {"job_id": 24, "task_id": _n(1)}
    het = {"job_id": 40, "job_offset": 1 if raw is raw38 else _n(1)}
    jobs = records.dbd_jobs({"jobs": [raw(26, array=task), raw(41, het=het)]})

    found = records.direct_from_dbd(jobs, {"gpuc-folding"})

    assert [r.backend_id for r in found] == ["24_1", "40+1"]


@pytest.mark.parametrize("raw", [raw38, raw42], ids=["v0.0.38", "v0.0.42"])
def test_other_accounts_unfinished_and_never_started_jobs_are_left_out(raw):
    running = "RUNNING" if raw is raw38 else ["RUNNING"]
    cancelled = "CANCELLED" if raw is raw38 else ["CANCELLED"]
    jobs = records.dbd_jobs(
        {
            "jobs": [
                raw(1, account="physics"),
                raw(2, state={"current": running, "reason": "None"}),
                raw(
                    3,
                    state={"current": cancelled, "reason": "None"},
                    time={"elapsed": 0, "end": START, "start": 0, "submission": START - 9},
                ),
                raw(4),
            ]
        }
    )

    assert [r.backend_id for r in records.direct_from_dbd(jobs, {"gpuc-folding"})] == ["4"]


def test_a_portal_tag_is_passed_on_with_the_id_the_portal_job_would_carry():
    tag = "gpuc:0732ffb4-ce17-4808-bb62-96c015afc025"
    comment = {"administrator": None, "job": tag, "system": None}
    jobs = records.dbd_jobs(
        {"jobs": [raw38(11, array={"job_id": 10, "task_id": 0}, comment=comment)]}
    )

    [found] = records.direct_from_dbd(jobs, {"gpuc-folding"})

    assert (found.backend_id, found.portal_uuid, found.portal_backend_id) == (
        "10_0",
        "0732ffb4-ce17-4808-bb62-96c015afc025",
        "10",
    )
