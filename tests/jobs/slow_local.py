"""A local backend whose submit is slow and leaves a trace, for the worker-recovery tests (run in
real Celery worker processes, so it lives in an importable module, not in a test)."""

from __future__ import annotations

import os
import time

from jobs.backends.base import JobSpec
from jobs.backends.local import LocalBackend


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


class SlowLocalBackend(LocalBackend):
    """The local backend; each submit first notes `call <uuid>` in options["trace"] and waits
    options["submit_delay"] seconds (a slow cluster, so that a worker can be killed in the
    middle of a batch). A submit of a job the cluster already has is noted `dup <uuid>`: the
    forwarder must have looked it up by uuid first, so that line must never appear."""

    def submit(self, spec: JobSpec) -> str:
        trace = str(self.options["trace"])
        _append(trace, f"call {spec.uuid}")
        time.sleep(float(self.options.get("submit_delay", 0)))
        if self.find([spec.uuid]):
            _append(trace, f"dup {spec.uuid}")
        backend_id = super().submit(spec)
        _append(trace, f"done {spec.uuid}")
        return backend_id
