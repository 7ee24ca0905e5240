"""The JupyterLab app row as migrations 0011 and 0012 ship it. A transactional test
(live_server) flushes every table, data migrations' rows included, so session tests make sure
it is there."""

from __future__ import annotations

import importlib

import pytest

from jobs.models import SessionApp

_shipped = importlib.import_module("jobs.migrations.0012_sessions_jupyterlab")


@pytest.fixture(autouse=True)
def jupyterlab_app(db: None) -> SessionApp:
    app, _ = SessionApp.objects.get_or_create(
        slug="jupyterlab",
        defaults={
            "name": "JupyterLab",
            "command": _shipped.JUPYTERLAB_COMMAND,
            "port": 0,
            "token_scheme": "token",
            "activity_path": "api/kernels",
        },
    )
    return app
