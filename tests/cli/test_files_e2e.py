"""`gpuc cp` and `gpuc ls-files` against the real API (live_server) and a local cluster's
project folder: a file goes up streamed, is listed, and comes back with the same bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Gpuc

pytestmark = pytest.mark.django_db(transaction=True)


def test_gpuc_cp_uploads_lists_and_downloads_a_file(
    gpuc: Gpuc,
    local: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    project = ["-p", str(tenant.project.uuid)]

    up = gpuc("cp", source, ":", *project)
    assert up.code == 0, up.err
    assert ":weights.bin (3145745 bytes)" in up.err
    assert gpuc("cp", source, ":copy.bin", *project, "-c", "local").code == 0

    listed = gpuc("ls-files", *project)
    assert listed.code == 0, listed.err
    assert "weights.bin" in listed.out and "copy.bin" in listed.out
    assert "3145745" in listed.out

    back = tmp_path / "back"
    back.mkdir()
    down = gpuc("cp", ":weights.bin", back, *project)
    assert down.code == 0, down.err
    assert hashlib.sha256((back / "weights.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )


def test_gpuc_cp_names_a_refused_path_and_needs_one_remote_side(
    gpuc: Gpuc,
    local: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    source = tmp_path / "a.txt"
    source.write_text("a")
    project = ["-p", str(tenant.project.uuid)]

    both_local = gpuc("cp", source, tmp_path / "b.txt", *project)
    escaping = gpuc("cp", ":../secret", tmp_path / "b.txt", *project)

    assert both_local.code == 2
    assert "starting with ':'" in both_local.err
    assert escaping.code == 1
    assert "'../secret'" in escaping.err


def test_gpuc_cp_refuses_a_file_over_the_quota_before_sending_it(
    gpuc: Gpuc,
    local: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    from jobs.storage.models import ProjectStorage

    ProjectStorage.objects.create(project=tenant.project, quota_bytes=100)
    source = tmp_path / "big.bin"
    source.write_bytes(b"b" * 101)

    run = gpuc("cp", source, ":", "-p", str(tenant.project.uuid))

    assert run.code == 1
    assert "does not fit in the project's storage: 100 of 100 bytes are free" in run.err


def test_gpuc_ls_files_follows_the_pages_of_a_folder_of_2500_files(
    gpuc: Gpuc,
    local: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    import json

    folder = tmp_path / "jobs" / "projects" / "vision-lab.folding" / "many"
    folder.mkdir(parents=True)
    names = sorted(f"f-{(i * 7919) % 2500:05d}.txt" for i in range(2500))
    for name in names:
        (folder / name).write_bytes(b"x")
    project = ["-p", str(tenant.project.uuid)]

    table = gpuc("ls-files", ":many", *project)
    as_json = gpuc("ls-files", ":many", *project, "--json")

    assert table.code == 0, table.err
    listed = [line.split()[0] for line in table.out.splitlines()[1:]]
    assert listed == names
    assert as_json.code == 0, as_json.err
    body = json.loads(as_json.out)
    assert [e["name"] for e in body["entries"]] == names
    assert "next" not in body and "previous" not in body
    assert body["path"] == "many"


def test_gpuc_cp_saves_a_download_readable_as_the_umask_allows(
    gpuc: Gpuc,
    local: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    project = ["-p", str(tenant.project.uuid)]
    assert gpuc("cp", source, ":", *project).code == 0
    back = tmp_path / "back"
    back.mkdir()
    umask = os.umask(0o022)
    try:
        down = gpuc("cp", ":notes.txt", f"{back}/", *project)
    finally:
        os.umask(umask)

    assert down.code == 0, down.err
    assert (back / "notes.txt").read_text() == "notes"
    assert (back / "notes.txt").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in back.iterdir()] == ["notes.txt"]
