"""Project storage meets jobs: a local job reads an uploaded file from $GPUC_PROJECT_DIR, and
its results are copied into the project's storage in one call."""

from __future__ import annotations

from http import HTTPStatus

from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job
from tests.jobs.test_local_backend import _submit_and_forward, _sync_until
from tests.jobs.test_local_backend import local_body as _local_body

local_body = _local_body  # the same fixture, under its name here


def test_a_local_job_reads_the_uploaded_file_from_gpuc_project_dir(
    api_alice, tenant, local_cluster, local_body, tmp_path
):
    files_url = f"/api/v1/projects/{tenant.project.uuid}/files/"
    upload = api_alice.post(
        files_url + "upload/?cluster=local",
        {"file": SimpleUploadedFile("input.txt", b"hello from storage\n")},
        format="multipart",
    )
    assert upload.status_code == HTTPStatus.CREATED

    job = _submit_and_forward(
        api_alice,
        local_body,
        'echo "dir=$GPUC_PROJECT_DIR"\n'
        'cat "$GPUC_PROJECT_DIR/input.txt"\n'
        'tr a-z A-Z < "$GPUC_PROJECT_DIR/input.txt" > "$GPUC_OUTPUT_DIR/shout.txt"\n',
    )
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)

    assert job.state == Job.State.COMPLETED
    log = api_alice.get(f"/api/v1/jobs/{job.uuid}/log/").json()["data"]
    folder = tmp_path / "jobs" / "projects" / "vision-lab.folding"
    assert f"dir={folder}\n" in log
    assert "hello from storage" in log

    copied = api_alice.post(
        files_url + "copy-results/", {"job": str(job.uuid), "path": "runs/first"}, format="json"
    )

    assert copied.status_code == HTTPStatus.CREATED, copied.json()
    assert [e["path"] for e in copied.json()["copied"]] == ["runs/first/shout.txt"]
    assert (folder / "runs" / "first" / "shout.txt").read_bytes() == b"HELLO FROM STORAGE\n"


def test_a_job_of_another_project_cannot_be_copied_in(
    api_alice, api_mallory, tenant, mallory_tenant, local_cluster
):
    response = api_alice.post(
        f"/api/v1/projects/{tenant.project.uuid}/files/copy-results/",
        {"job": "00000000-0000-0000-0000-000000000001"},
        format="json",
    )

    assert response.status_code == HTTPStatus.NOT_FOUND


def test_the_job_page_copies_the_results_into_the_project_storage_in_one_click(
    client, alice, api_alice, tenant, local_cluster, local_body, tmp_path
):
    job = _submit_and_forward(api_alice, local_body, 'echo 42 > "$GPUC_OUTPUT_DIR/answer.txt"\n')
    job = _sync_until(job, local_cluster, Job.FINAL_STATES)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.uuid}/results/")
    assert "Copy to project storage" in page.content.decode()

    response = client.post(f"/projects/{tenant.project.uuid}/files/copy-results/{job.uuid}/")

    assert response.status_code == HTTPStatus.FOUND
    assert f"/projects/{tenant.project.uuid}/files/?cluster=local&path=results" in response.url
    folder = tmp_path / "jobs" / "projects" / "vision-lab.folding" / "results"
    [copied] = list(folder.rglob("answer.txt"))
    assert copied.read_text() == "42\n"


def test_mallory_cannot_copy_results_into_a_project_from_the_web(
    client, mallory, tenant, local_cluster
):
    client.force_login(mallory)

    response = client.post(
        f"/projects/{tenant.project.uuid}/files/copy-results/00000000-0000-0000-0000-000000000001/"
    )

    assert response.status_code == HTTPStatus.NOT_FOUND
