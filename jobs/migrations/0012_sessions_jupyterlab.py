"""Ship JupyterLab as a session app (installed on the dev cluster by deploy/sessions/up.sh; a
facility edits the path, or adds RStudio or code-server, in the admin)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

JUPYTERLAB_COMMAND = (
    "# A home the job can write to (kernels keep state there), else the job's own directory.\n"
    '[ -d "$HOME" ] && [ -w "$HOME" ] || export HOME="$GPUC_JOB_DIR"\n'
    'JUPYTER_TOKEN={token} JUPYTER_RUNTIME_DIR="$GPUC_JOB_DIR/.jupyter-runtime" \\\n'
    "exec /opt/gpucommons-sessions/jupyterlab/bin/jupyter-lab --no-browser \\\n"
    "    --ServerApp.ip=0.0.0.0 --ServerApp.port={port} --ServerApp.base_url={base_url} \\\n"
    "    --ServerApp.allow_remote_access=True --ServerApp.port_retries=0 \\\n"
    '    --ServerApp.root_dir="${GPUC_PROJECT_DIR:-$HOME}"'
)


def add_jupyterlab(apps: Any, schema_editor: Any) -> None:
    SessionApp = apps.get_model("jobs", "SessionApp")
    SessionApp.objects.get_or_create(
        slug="jupyterlab",
        defaults={
            "name": "JupyterLab",
            "description": "Notebooks, terminals and files in the browser, on a cluster node.",
            "command": JUPYTERLAB_COMMAND,
            "port": 0,
            "token_scheme": "token",
        },
    )


def remove_jupyterlab(apps: Any, schema_editor: Any) -> None:
    apps.get_model("jobs", "SessionApp").objects.filter(slug="jupyterlab", sessions=None).delete()


class Migration(migrations.Migration):
    dependencies = [("jobs", "0011_sessions")]

    operations = [migrations.RunPython(add_jupyterlab, remove_jupyterlab)]
