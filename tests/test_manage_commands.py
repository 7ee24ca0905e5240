"""manage.py starts in a fresh process: the system checks of `migrate` import DRF's settings
before any URLconf, which once made a circular import (portal.api <-> rest_framework.views)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_manage_py_check_passes_in_a_fresh_process(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "System check identified" in result.stdout or "no issues" in result.stdout
