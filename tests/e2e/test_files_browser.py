"""The project file browser in headless Chromium: alice uploads a file through the page's
script (XHR with a progress bar, CSRF header), makes a folder, renames and deletes, and the
bytes land in the project's folder; the page keeps its Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from accounts.models import User
from tests.e2e.conftest import Browser, sign_in, verified

pytestmark = pytest.mark.django_db(transaction=True)


def test_alice_uploads_makes_a_folder_renames_and_deletes_in_the_file_browser(
    browser: Browser, alice: User, tenant: Any, local_cluster: Any, tmp_path: Path
) -> None:
    verified(alice)
    page = browser()
    sign_in(page, "alice")
    page.goto(f"/projects/{tenant.project.uuid}/")
    page.get_by_role("link", name="Files").click()
    expect(page.locator("h1")).to_contain_text("Files of")
    folder = tmp_path / "jobs" / "projects" / "vision-lab.folding"
    data = b"x" * (3 * 1024 * 1024)

    page.locator("#upload-file").set_input_files(
        {"name": "weights.bin", "mimeType": "application/octet-stream", "buffer": data}
    )
    page.locator("#upload-form button[type=submit]").click()
    expect(page.locator("#files table")).to_contain_text("weights.bin")
    assert (folder / "weights.bin").read_bytes() == data

    page.locator("#mkdir-name").fill("inputs")
    page.locator("#mkdir-form button[type=submit]").click()
    expect(page.locator("#files table")).to_contain_text("inputs/")
    assert (folder / "inputs").is_dir()

    page.once("dialog", lambda dialog: dialog.accept("inputs/w.bin"))
    page.locator("button[data-action=rename][data-path='weights.bin']").click()
    expect(page.locator("#files table")).not_to_contain_text("weights.bin")
    assert (folder / "inputs" / "w.bin").read_bytes() == data

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("button[data-action=delete][data-path='inputs']").click()
    expect(page.locator("#files table")).to_contain_text("This folder is empty.")
    assert list(folder.iterdir()) == []
