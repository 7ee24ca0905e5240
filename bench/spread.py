"""How a load's kept-alive connections are spread over the gunicorn workers (bench/api.py and
bench/submit.py).

gunicorn's workers each listen on their own socket (deploy/gunicorn.conf.py: reuse_port) and
the kernel hashes each new connection to one of them, so a few long-lived connections can land
unevenly: 4 connections over 2 workers go 2+2 only 6 times in 16, and a worker's threads share
one interpreter lock. The benches print the spread with each figure so that a reader can tell
a run served unevenly from one that was not."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter


def connection_spread(port: int, procs: int) -> str:
    """The established connections to `port` per gunicorn worker right now, busiest first
    ("8+8", "16+0", "3+1"; "?" without iproute2's ss)."""
    ss = shutil.which("ss")
    if ss is None:
        return "?"
    out = subprocess.run(
        [ss, "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    counts = sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)
    counts += [0] * (procs - len(counts))
    return "+".join(str(count) for count in counts)
