"""The portal's settings with a one-view URLconf (bench/bare_urls.py): the floor that
bench/api.py compares the portal's API with (same middleware, gunicorn, DRF and JSON renderer)."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
