"""A project folder's usage is kept in a row, not walked on every upload: uploads add to it,
deletes take from it, the quota is checked against it (413 beyond, also for uploads racing for
the last bytes), and a recount from disk (hourly task, `manage.py storage_recount`) takes in
what jobs wrote; a recount racing a portal write walks again rather than saving a stale count."""

from __future__ import annotations

import io
import threading
from http import HTTPStatus

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection

from jobs.storage import fs, services, usage
from jobs.storage.exceptions import StorageQuotaExceeded
from jobs.storage.models import ProjectStorage, ProjectStorageUsage
from jobs.storage.selectors import storage_project_for_user
from jobs.storage.tasks import storage_recount_all_task


def _upload(api, files_url: str, name: str, data: bytes):
    return api.post(
        files_url + "upload/?cluster=local",
        {"file": SimpleUploadedFile(name, data)},
        format="multipart",
    )


def _usage(api, files_url: str) -> int:
    return api.get(files_url).json()["usage_bytes"]


def _row(tenant) -> ProjectStorageUsage:
    return ProjectStorageUsage.objects.get(project=tenant.project, cluster__name="local")


def test_uploads_add_replacements_adjust_and_deletes_take_from_the_kept_usage(
    api_alice, files_url, folder, tenant
):
    assert _upload(api_alice, files_url, "a.bin", b"a" * 100).status_code == HTTPStatus.CREATED
    api_alice.post(files_url + "mkdir/", {"path": "raw"}, format="json")
    _upload_in = api_alice.post(
        files_url + "upload/?cluster=local&path=raw",
        {"file": SimpleUploadedFile("b.bin", b"b" * 30)},
        format="multipart",
    )
    assert _upload_in.status_code == HTTPStatus.CREATED
    assert _row(tenant).used_bytes == 130

    assert _upload(api_alice, files_url, "a.bin", b"A" * 40).status_code == HTTPStatus.CREATED
    assert _row(tenant).used_bytes == 70
    api_alice.post(files_url + "rename/", {"path": "a.bin", "new_path": "c.bin"}, format="json")
    assert _row(tenant).used_bytes == 70

    gone = api_alice.post(files_url + "delete/", {"path": "raw", "recursive": True}, format="json")
    assert gone.status_code == HTTPStatus.NO_CONTENT
    assert _row(tenant).used_bytes == 40
    api_alice.post(files_url + "delete/", {"path": "c.bin"}, format="json")
    row = _row(tenant)
    assert row.used_bytes == 0
    assert row.changes == 5  # three uploads and two deletes; the rename changes nothing
    assert _usage(api_alice, files_url) == 0


def test_the_listing_reads_the_kept_usage_without_walking_the_folder(
    api_alice, files_url, folder, tenant, monkeypatch
):
    assert _upload(api_alice, files_url, "a.bin", b"a" * 10).status_code == HTTPStatus.CREATED
    walks: list[str] = []
    real_usage = fs.usage
    monkeypatch.setattr(fs, "usage", lambda root: walks.append(root) or real_usage(root))

    listing = api_alice.get(files_url).json()
    assert _upload(api_alice, files_url, "b.bin", b"b" * 5).status_code == HTTPStatus.CREATED

    assert listing["usage_bytes"] == 10
    assert walks == []
    assert _row(tenant).used_bytes == 15


def test_what_a_job_wrote_counts_after_the_recount_and_then_holds_uploads_to_the_quota(
    api_alice, files_url, folder, tenant
):
    ProjectStorage.objects.create(project=tenant.project, quota_bytes=1000)
    assert _upload(api_alice, files_url, "small.txt", b"x" * 100).status_code == (
        HTTPStatus.CREATED
    )
    (folder / "job-output").mkdir()
    (folder / "job-output" / "model.bin").write_bytes(b"m" * 800)  # a job, not the portal
    assert _usage(api_alice, files_url) == 100

    out = io.StringIO()
    call_command("storage_recount", "--project", str(tenant.project.uuid), stdout=out)
    refused = _upload(api_alice, files_url, "big.bin", b"y" * 150)

    assert "900 bytes (was 100 bytes)" in out.getvalue()
    assert _usage(api_alice, files_url) == 900
    assert refused.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert refused.json()["code"] == "storage_quota_exceeded"
    assert refused.json()["usage_bytes"] == 900
    assert not (folder / "big.bin").exists()
    assert _upload(api_alice, files_url, "fits.bin", b"z" * 100).status_code == (HTTPStatus.CREATED)


def test_a_folder_the_portal_has_not_used_yet_is_measured_once_on_first_use(
    api_alice, files_url, folder, tenant
):
    folder.mkdir(parents=True)
    (folder / "before.bin").write_bytes(b"b" * 321)
    (folder / f"{fs.TEMP_PREFIX}half").write_bytes(b"t" * 1000)  # an upload in progress

    listing = api_alice.get(files_url).json()

    assert listing["usage_bytes"] == 321
    assert listing["usage_counted_at"]
    assert _row(tenant).used_bytes == 321


def test_the_hourly_task_recounts_every_folder_the_portal_keeps_a_usage_for(
    api_alice, files_url, folder, tenant, celery_eager
):
    _upload(api_alice, files_url, "a.bin", b"a" * 10)
    (folder / "job.out").write_bytes(b"j" * 90)
    (folder / "a.bin").unlink()

    assert storage_recount_all_task() == 1

    assert _row(tenant).used_bytes == 90


def test_a_recount_racing_a_portal_upload_walks_again_and_keeps_the_true_total(
    alice, tenant, folder, local_cluster, monkeypatch
):
    project = storage_project_for_user(user=alice, project_uuid=tenant.project.uuid)
    where = services.storage_folder(user=alice, project=project, cluster="local")
    services.storage_write(user=alice, folder=where, path="a.bin", chunks=[b"a" * 10])
    walks: list[int] = []
    real_usage = fs.usage

    def walk_while_the_portal_writes(root: str) -> int:
        counted = real_usage(root)
        walks.append(counted)
        if len(walks) == 1:  # the portal stores a file after the walk, before the recount saves
            services.storage_write(user=alice, folder=where, path="b.bin", chunks=[b"b" * 5])
        return counted

    monkeypatch.setattr(fs, "usage", walk_while_the_portal_writes)

    row = usage.storage_recount(folder=where)

    assert walks == [10, 15]
    assert row.used_bytes == 15
    assert _row(tenant).used_bytes == 15


@pytest.fixture
def celery_eager():
    from portal.celery import app

    conf = app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager, conf.task_eager_propagates = True, True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


# --- concurrency (PostgreSQL row locks) --------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_uploads_racing_for_the_last_of_the_quota_store_one_and_refuse_the_rest(
    alice, tenant, folder, local_cluster
):
    ProjectStorage.objects.create(project=tenant.project, quota_bytes=1000)
    project = storage_project_for_user(user=alice, project_uuid=tenant.project.uuid)
    where = services.storage_folder(user=alice, project=project, cluster="local")
    services.storage_write(user=alice, folder=where, path="base.bin", chunks=[b"0" * 100])
    racers = 4
    all_started = threading.Barrier(racers)
    outcomes: list[str] = []

    def upload(index: int) -> None:
        def chunks():
            yield b"x" * 300
            all_started.wait(timeout=30)  # every upload has begun before any finishes
            yield b"x" * 300

        try:
            services.storage_write(
                user=alice, folder=where, path=f"racer-{index}.bin", chunks=chunks()
            )
            outcomes.append("stored")
        except StorageQuotaExceeded:
            outcomes.append("413")
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["413", "413", "413", "stored"]
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    assert on_disk == 700
    assert _row(tenant).used_bytes == 700
    assert len(list(folder.glob("racer-*.bin"))) == 1
    assert not list(folder.glob(f"{fs.TEMP_PREFIX}*"))
