"""Saving a streamed download (`gpuc results get`, `gpuc cp :PATH ...`): to stdout, or to a
temporary file beside the target renamed into place once complete, so that a download cut off
leaves nothing half-written; the file is readable as the umask allows, as cp would make it."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import requests

from portal.cli.client import EXIT_OK, CliError, failure_reason

BLOCK = 1024 * 1024


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def save_download(response: requests.Response, target: Path | None, *, what: str) -> int:
    """Write the response's body to `target` (None: stdout) and say so on stderr."""
    with response:
        if target is None:
            for block in response.iter_content(BLOCK):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
            return EXIT_OK
        fd, tmp = tempfile.mkstemp(dir=target.parent.absolute(), prefix=f".{target.name}.")
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for block in response.iter_content(BLOCK):
                    handle.write(block)
                    size += len(block)
            os.chmod(tmp, 0o644 & ~_umask())
            os.replace(tmp, target)
        except requests.RequestException as exc:
            Path(tmp).unlink(missing_ok=True)
            raise CliError(f"download of {what} broke off: {failure_reason(exc)}") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    print(f"{target} ({size} bytes)", file=sys.stderr)
    return EXIT_OK
