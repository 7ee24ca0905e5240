"""Project storage on the real Slurm: a file uploaded through the API is read by a Slurm job
(running as the member's cluster account) from $GPUC_PROJECT_DIR on the shared filesystem."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job
from quotas.models import Allocation, Cluster
from tests.jobs.slurm.conftest import ALICE_UNIX, SlurmSite, both_slurms, sync_until
from tests.jobs.slurm.test_api import submit

pytestmark = pytest.mark.slurm


@both_slurms
def test_a_slurm_job_reads_the_uploaded_file_from_gpuc_project_dir(
    api_alice, tenant, slurm_cluster: Cluster, slurm_allocation: Allocation, slurm_site: SlurmSite
):
    files_url = f"/api/v1/projects/{tenant.project.uuid}/files/"
    name = f"input-{uuid.uuid4().hex[:8]}.txt"  # (the shared filesystem outlives test runs)
    upload = api_alice.post(
        files_url + "upload/?cluster=slurm",
        {"file": SimpleUploadedFile(name, b"data for slurm\n")},
        format="multipart",
    )
    assert upload.status_code == HTTPStatus.CREATED, upload.json()
    project_dir = f"{slurm_site.shared_root}/projects/vision-lab.folding"
    try:
        job = submit(
            api_alice,
            script=(
                'echo "$(id -un) reads $GPUC_PROJECT_DIR"\n'
                f'cat "$GPUC_PROJECT_DIR/{name}"\n'
                f'cp "$GPUC_PROJECT_DIR/{name}" "$GPUC_OUTPUT_DIR/seen.txt"\n'
            ),
        )
        sync_until(slurm_cluster, [job])

        assert job.state == Job.State.COMPLETED, job.state_reason
        log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()["data"]
        assert log == f"{ALICE_UNIX} reads {project_dir}\ndata for slurm\n"
        copied = api_alice.post(
            files_url + "copy-results/",
            {"cluster": "slurm", "job": str(job.uuid), "path": f"runs/{job.uuid}"},
            format="json",
        )
        assert copied.status_code == HTTPStatus.CREATED, copied.json()
        assert Path(project_dir, "runs", str(job.uuid), "seen.txt").read_bytes() == (
            b"data for slurm\n"
        )
    finally:
        api_alice.post(files_url + "delete/", {"cluster": "slurm", "path": name}, format="json")
        api_alice.post(
            files_url + "delete/",
            {"cluster": "slurm", "path": "runs", "recursive": True},
            format="json",
        )
