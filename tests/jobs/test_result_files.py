"""Result files read by the local and Kubernetes backends stay inside the job's directory."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from jobs.backends.base import BackendError
from jobs.backends.files import list_result_files, open_result_file


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """A job's output directory next to another job's secret, with links of every kind."""
    (tmp_path / "secret.txt").write_text("not yours")
    base = tmp_path / "job"
    (base / "plots").mkdir(parents=True)
    (base / "metrics.txt").write_text("0.93\n")
    (base / "plots" / "loss.png").write_bytes(b"png\n")
    (base / "alias.txt").symlink_to("metrics.txt")
    (base / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (base / "up").symlink_to("..")
    (base / "dangling").symlink_to("nowhere")
    os.mkfifo(base / "pipe")
    return base


def test_listing_shows_regular_files_and_links_that_stay_inside(output):
    files = list_result_files(output)

    assert [(f.path, f.size) for f in files] == [
        ("alias.txt", 5),
        ("metrics.txt", 5),
        ("plots/loss.png", 4),
    ]
    assert all(f.modified is not None for f in files)


def test_listing_stops_at_the_limit_and_a_missing_directory_has_no_files(output, tmp_path):
    assert [f.path for f in list_result_files(output, limit=2)] == ["alias.txt", "metrics.txt"]
    assert list_result_files(tmp_path / "never-ran") == []


def test_a_result_file_opens_with_its_bytes_also_through_an_inside_link(output):
    with open_result_file(output, "plots/loss.png") as handle:
        assert handle.read() == b"png\n"
    with open_result_file(output, "alias.txt") as handle:
        assert handle.read() == b"0.93\n"


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../secret.txt", "plots/../../secret.txt", "a\x00b", "leak.txt"]
)
def test_paths_leading_out_of_the_directory_are_refused(output, path):
    with pytest.raises(BackendError):
        open_result_file(output, path)


def test_up_through_a_linked_parent_is_refused(output):
    with pytest.raises(BackendError):
        open_result_file(output, "up/secret.txt")


@pytest.mark.parametrize("path", ["missing.txt", "plots", "dangling"])
def test_what_is_not_a_regular_file_is_not_found(output, path):
    with pytest.raises(FileNotFoundError):
        open_result_file(output, path)


def test_a_fifo_left_by_the_job_is_not_found_instead_of_blocking_the_reader(output):
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            open_result_file(output, "pipe").close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # blocked in open(): give it a writer so the thread can end
        os.close(os.open(output / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("opening a FIFO blocked until a writer came")
    assert len(outcome) == 1 and isinstance(outcome[0], FileNotFoundError)
