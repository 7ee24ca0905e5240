"""Long-lived processes (gunicorn's web workers, Celery's workers) freeze what they loaded at
start, so that the garbage collector's full collections walk only what requests and tasks
allocate."""

from __future__ import annotations

import gc
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.signals import worker_process_init, worker_ready

from portal.celery import freeze_what_is_loaded

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_a_gunicorn_worker_freezes_what_it_loaded_once_the_application_is_loaded(unfrozen):
    conf = runpy.run_path(str(GUNICORN_CONF))

    conf["post_worker_init"](None)

    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("signal", [worker_ready, worker_process_init])
def test_a_celery_worker_freezes_what_it_loaded_when_it_starts(unfrozen, signal):
    assert freeze_what_is_loaded in signal._live_receivers(None)

    freeze_what_is_loaded()

    assert gc.get_freeze_count() > 0
