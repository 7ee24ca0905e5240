"""Result files read by the local, Slurm and Kubernetes backends (jobs.backends.files) stay
inside the job's directory: no link is followed, not even one that stays inside."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from jobs.backends.base import BackendError
from jobs.backends.files import PathRefused, list_files, open_file, result_parts


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


def test_listing_shows_regular_files_and_no_link(output):
    files = list_files(output, [])

    assert [(f.path, f.size) for f in files] == [("metrics.txt", 5), ("plots/loss.png", 4)]
    assert all(f.modified is not None for f in files)


def test_listing_stops_at_the_limit_and_a_missing_directory_has_no_files(output, tmp_path):
    assert [f.path for f in list_files(output, [], limit=1)] == ["metrics.txt"]
    assert list_files(tmp_path / "never-ran", []) == []


def test_a_result_file_opens_with_its_bytes(output):
    with open_file(output, result_parts("plots/loss.png")) as handle:
        assert handle.read() == b"png\n"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../secret.txt",
        "plots/../../secret.txt",
        "a\x00b",
        "leak.txt",
        "alias.txt",
        "dangling",
        "pipe",
    ],
)
def test_paths_leading_out_of_the_directory_are_refused(output, path):
    with pytest.raises(BackendError):
        open_file(output, result_parts(path))


def test_up_through_a_linked_parent_is_refused(output):
    with pytest.raises(BackendError):
        open_file(output, result_parts("up/secret.txt"))


def test_what_is_not_there_is_not_found_and_a_folder_is_not_a_file(output):
    with pytest.raises(FileNotFoundError):
        open_file(output, result_parts("missing.txt"))
    with pytest.raises(IsADirectoryError):
        open_file(output, result_parts("plots"))


def test_a_fifo_left_by_the_job_is_refused_instead_of_blocking_the_reader(output):
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            open_file(output, result_parts("pipe")).close()
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
    assert len(outcome) == 1 and isinstance(outcome[0], BackendError)


def test_an_output_folder_that_is_a_link_is_refused_not_walked(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "output").symlink_to("/")

    with pytest.raises(PathRefused, match="symbolic links are not followed"):
        list_files(tmp_path, ["job", "output"])
    with pytest.raises(PathRefused):
        open_file(tmp_path, ["job", "output", "etc", "passwd"])
