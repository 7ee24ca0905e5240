"""Every task of the quotas app is queued from quotas/queue.py (one place to read what runs
later), as jobs/queue.py does for the jobs app."""

from __future__ import annotations

import re
from pathlib import Path

import quotas

QUEUED = re.compile(r"\.(delay|apply_async)\(")


def test_every_task_of_the_quotas_app_is_queued_from_quotas_queue():
    root = Path(quotas.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "queue.py" and QUEUED.search(path.read_text())
    ]
    assert offenders == []


def test_the_accounts_and_portal_packages_queue_no_task_of_their_own():
    import accounts
    import portal

    offenders = [
        str(path)
        for package in (accounts, portal)
        for path in Path(package.__file__).parent.rglob("*.py")
        if QUEUED.search(path.read_text())
    ]
    assert offenders == []
