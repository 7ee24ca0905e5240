"""`python -m portal.cli` runs gpuc."""

from __future__ import annotations

import sys

from portal.cli import main

sys.exit(main())
