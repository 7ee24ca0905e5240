"""The Celery application: tasks are discovered in every app's tasks.py."""

from __future__ import annotations

import gc
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["accounts", "quotas", "quotas.billing", "jobs", "jobs.storage"])


@worker_ready.connect  # the worker's own process (threads and solo pools run tasks there)
@worker_process_init.connect  # each process of a prefork pool
def freeze_what_is_loaded(**kwargs: object) -> None:
    """Django, the apps and the tasks are loaded: move them out of the garbage collector's
    view, so that a full collection walks only what tasks allocate (as deploy/gunicorn.conf.py
    does for the web workers)."""
    gc.freeze()
