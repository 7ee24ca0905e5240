"""gpuc against a real local HTTP server answering 429 Too Many Requests: it waits the
Retry-After the server asks for (seconds or an HTTP-date), a bounded number of times."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from portal import cli
from portal.cli import client
from tests.cli.conftest import FakeApi

JOB_ID = "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11"
PROJECT_ID = "0d6a1c1e-8c1e-4b7a-9f43-7d8f2b6c5a90"
OK = 200
THROTTLED = {"detail": "Request was throttled.", "code": "throttled"}


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses gpuc takes, recorded instead of slept."""
    taken: list[float] = []
    monkeypatch.setattr(client, "_sleep", taken.append)
    return taken


def test_a_429_is_retried_after_the_seconds_retry_after_asks_for(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/",
        (429, THROTTLED, {"Retry-After": "1"}),
        (OK, {"id": JOB_ID, "state": "running"}),
    )

    started = time.monotonic()
    assert cli.main(["status", JOB_ID]) == 0

    assert time.monotonic() - started >= 1.0  # really waited, on a real server
    assert len(logged_in.seen) == 2
    out, err = capsys.readouterr()
    assert "State:      running" in out
    assert err == f"warning: {logged_in.url} is rate limiting (HTTP 429); retrying in 1 s\n"


def test_an_http_date_retry_after_is_waited_until(logged_in: FakeApi, pauses: list[float]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/",
        (429, THROTTLED, {"Retry-After": when}),
        (OK, {"id": JOB_ID, "state": "running"}),
    )

    assert cli.main(["status", JOB_ID]) == 0

    [pause] = pauses
    assert 28 <= pause <= 30
    assert len(logged_in.seen) == 2


def test_a_submit_refused_with_429_is_sent_again_with_the_same_key(
    logged_in: FakeApi, pauses: list[float], tmp_path: Path
) -> None:
    script = tmp_path / "job.sh"
    script.write_text("echo hi\n")
    logged_in.on(
        "POST",
        "jobs/",
        (429, THROTTLED, {"Retry-After": "2"}),
        (429, THROTTLED, {"Retry-After": "3"}),
        (201, {"id": JOB_ID, "state": "pending"}),
    )

    assert cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "5"]) == 0

    assert pauses == [2, 3]
    keys = {s.headers["Idempotency-Key"] for s in logged_in.seen}
    assert len(logged_in.seen) == 3 and len(keys) == 1


def test_a_429_without_retry_after_backs_off_and_a_cancel_is_retried_too(
    logged_in: FakeApi, pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "RETRY_DELAY", 1.0)
    logged_in.on(
        "POST",
        f"jobs/{JOB_ID}/cancel/",
        (429, THROTTLED),
        (429, THROTTLED, {"Retry-After": "soon"}),
        (OK, {"id": JOB_ID, "state": "cancelled"}),
    )

    assert cli.main(["cancel", JOB_ID]) == 0
    assert pauses == [1.0, 2.0]


def test_retries_of_429_are_bounded_and_the_last_answer_is_reported(
    logged_in: FakeApi, pauses: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", f"jobs/{JOB_ID}/", (429, THROTTLED, {"Retry-After": "1"}))

    assert cli.main(["status", JOB_ID]) == 1

    assert pauses == [1] * client.RATE_LIMIT_RETRIES
    assert len(logged_in.seen) == client.RATE_LIMIT_RETRIES + 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == "error: Request was throttled. (rate limited: try again in 1 s)"


def test_a_retry_after_longer_than_gpuc_waits_is_an_error_at_once(
    logged_in: FakeApi, pauses: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", f"jobs/{JOB_ID}/", (429, THROTTLED, {"Retry-After": "3600"}))

    assert cli.main(["status", JOB_ID]) == 1

    assert pauses == []
    assert len(logged_in.seen) == 1
    assert capsys.readouterr().err == (
        "error: Request was throttled. (rate limited: try again in 3600 s)\n"
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: at once
        ("", 4.0),  # none: the backoff of the third attempt (1 s doubled twice)
        ("-5", 4.0),
        ("tomorrow", 4.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "RETRY_DELAY", 1.0)
    assert client.retry_after(header, 2) == seconds
