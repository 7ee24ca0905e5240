"""gpuc takes a job by the short id the portal shows (the first 8 characters of its UUID) or any
start of 4 or more hexadecimal digits, resolved through GET /api/v1/jobs/?id_prefix=."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal import cli
from tests.cli.conftest import FakeApi

JOB_ID = "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11"
TWIN_ID = "5b0e7a3c-9d01-4c2e-8f00-000000000002"
OK = 200


def _job(job_id: str, name: str, **extra: object) -> dict[str, object]:
    return {
        "id": job_id,
        "name": name,
        "state": "running",
        "created_at": "2025-01-02T03:04:05Z",
        **extra,
    }


@pytest.mark.parametrize(
    ("argv", "method", "path"),
    [
        (["status", "5b0e7a3c"], "GET", f"jobs/{JOB_ID}/"),
        (["logs", "5B0E7A3C"], "GET", f"jobs/{JOB_ID}/log/"),
        (["cancel", "5b0e7a3c"], "POST", f"jobs/{JOB_ID}/cancel/"),
        (["results", "5b0e7a3c"], "GET", f"jobs/{JOB_ID}/results/"),
        (["results", "get", "5b0e7a3c", "a.txt", "-o", "-"], "GET", f"jobs/{JOB_ID}/results/a.txt"),
    ],
)
def test_every_command_taking_a_job_accepts_its_short_id(
    logged_in: FakeApi, argv: list[str], method: str, path: str
) -> None:
    logged_in.on("GET", "jobs/", (OK, {"next": None, "results": [_job(JOB_ID, "train")]}))
    logged_in.on("GET", f"jobs/{JOB_ID}/", (OK, _job(JOB_ID, "train")))
    logged_in.on("GET", f"jobs/{JOB_ID}/log/", (OK, {"data": "", "next_offset": 0, "eof": True}))
    logged_in.on("POST", f"jobs/{JOB_ID}/cancel/", (OK, _job(JOB_ID, "train", state="cancelled")))
    logged_in.on("GET", f"jobs/{JOB_ID}/results/", (OK, {"results": []}))
    logged_in.on("GET", f"jobs/{JOB_ID}/results/a.txt", (OK, b"bytes"))

    assert cli.main(argv) == 0

    lookup, call = logged_in.seen
    assert (lookup.method, lookup.path) == ("GET", "jobs/")
    assert lookup.query == {"id_prefix": "5b0e7a3c", "page_size": "10"}
    assert (call.method, call.path) == (method, path)


def test_a_whole_uuid_is_used_as_it_is_without_a_lookup(logged_in: FakeApi) -> None:
    logged_in.on("GET", f"jobs/{JOB_ID}/", (OK, _job(JOB_ID, "train")))

    assert cli.main(["status", JOB_ID.upper()]) == 0
    assert [s.path for s in logged_in.seen] == [f"jobs/{JOB_ID}/"]


def test_cancel_says_which_job_a_short_id_stood_for(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", "jobs/", (OK, {"next": None, "results": [_job(JOB_ID, "train")]}))
    logged_in.on("POST", f"jobs/{JOB_ID}/cancel/", (OK, _job(JOB_ID, "train", state="cancelled")))

    assert cli.main(["cancel", "5b0e7a3c-4f"]) == 0
    assert capsys.readouterr().out == f"{JOB_ID}: cancelled\n"
    assert logged_in.seen[0].query["id_prefix"] == "5b0e7a3c-4f"


def test_an_ambiguous_short_id_is_refused_listing_the_candidates_and_nothing_is_done(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    candidates = [_job(TWIN_ID, "eval", state="pending"), _job(JOB_ID, "train")]
    logged_in.on("GET", "jobs/", (OK, {"next": None, "results": candidates}))

    assert cli.main(["cancel", "5b0e7a3c"]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "error: job id '5b0e7a3c' is ambiguous: 2 of your jobs start with it; give more of the id:"
    )
    assert err[1].split() == [TWIN_ID, "eval", "pending", "2025-01-02", "03:04:05"]
    assert err[2].split()[:3] == [JOB_ID, "train", "running"]
    assert [s.method for s in logged_in.seen] == ["GET"]  # no cancel was sent


def test_a_short_id_matching_none_of_your_jobs_is_not_found(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", "jobs/", (OK, {"next": None, "results": []}))

    assert cli.main(["status", "deadbeef"]) == 1
    assert capsys.readouterr().err == (
        "error: No such job: none of your jobs has an id starting with 'deadbeef'\n"
    )


@pytest.mark.parametrize("text", ["5b0", "5b0e7a3g", "5b0e 7a3c", "--5b0e7a3c", "5b0e7a3c/.."])
def test_what_is_neither_a_uuid_nor_a_start_of_one_is_a_usage_error(
    logged_in: FakeApi, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--", text]) == cli.EXIT_USAGE
    assert "expected a UUID or its first 4 or more hexadecimal digits" in capsys.readouterr().err
    assert logged_in.seen == []


def test_ls_shows_short_ids_longer_only_where_two_would_look_the_same(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = "0d6a1c1e-8c1e-4b7a-9f43-7d8f2b6c5a90"
    jobs = [_job(JOB_ID, "train"), _job(TWIN_ID, "eval"), _job(other, "prep")]
    logged_in.on("GET", "jobs/", (OK, {"next": None, "results": jobs}))

    assert cli.main(["ls"]) == 0

    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert ids == ["5b0e7a3c-4", "5b0e7a3c-9", "0d6a1c1e"]
