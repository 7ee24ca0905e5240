"""The Celery application: tasks are discovered in every app's tasks.py."""

from __future__ import annotations

import gc
import os
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready
from django.db import close_old_connections, connections

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


@worker_ready.connect
def close_start_up_connections(**kwargs: object) -> None:
    """The connection Django's system checks opened in the worker's main thread, which runs no
    task (with CELERY_DB_REUSE_MAX set, Celery's fixup no longer closes it at start-up)."""
    connections.close_all()


@task_prerun.connect
@task_postrun.connect
def keep_usable_connections(task: Task[Any, Any] | None = None, **kwargs: object) -> None:
    """Before and after each task, as Django does around each web request: close this thread's
    database connections that are broken, left inside a transaction or older than
    DB_CONN_MAX_AGE, and keep the others. Celery's own Django fixup would close every one
    around every task (settings.CELERY_DB_REUSE_MAX turns that off): a new PostgreSQL backend
    per task, and none of the task's statements ever prepared. Not for an eager task, which runs
    inside its caller's request or transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
