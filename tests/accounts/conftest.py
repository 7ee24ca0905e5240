"""Account tests start with a clean cache (signed-in clients: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    # allauth rate limits and used TOTP codes live in the (Redis) cache: start each test afresh.
    cache.clear()
    yield
    cache.clear()
