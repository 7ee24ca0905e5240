"""Project storage through the API: list, upload (streamed, limited, held to the quota, all or
nothing), download, make folder, rename, delete, copy a job's results; every path confined to
the project's folder; outsiders answered 404."""

from __future__ import annotations

import html
import os
import stat
from http import HTTPStatus
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.storage.exceptions import StorageNotFound
from jobs.storage.fs import TEMP_PREFIX
from jobs.storage.models import ProjectStorage
from jobs.storage.services import storage_quota_set
from quotas.policy import FACILITY_ADMINS_GROUP
from tests import factories

BOUNDARY = "gpucBoundary7MA4YWxk"


def _upload(api, files_url: str, name: str, data: bytes, path: str = ""):
    query = f"?cluster=local&path={path}" if path else "?cluster=local"
    return api.post(
        files_url + "upload/" + query,
        {"file": SimpleUploadedFile(name, data)},
        format="multipart",
    )


def _multipart(name: str, data: bytes) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _raw_upload(client, files_url: str, body: bytes):
    return client.generic(
        "POST",
        files_url + "upload/?cluster=local",
        data=body,
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_member_uploads_lists_and_downloads_a_file_with_its_bytes(api_alice, files_url, folder):
    response = _upload(api_alice, files_url, "data.csv", b"a,b\n1,2\n")

    assert response.status_code == HTTPStatus.CREATED, response.json()
    assert response.json()["path"] == "data.csv"
    assert response.json()["size"] == 8
    assert (folder / "data.csv").read_bytes() == b"a,b\n1,2\n"
    listing = api_alice.get(files_url, {"cluster": "local"}).json()
    assert [(e["name"], e["kind"], e["size"]) for e in listing["entries"]] == [
        ("data.csv", "file", 8)
    ]
    assert listing["usage_bytes"] == 8
    assert listing["cluster"] == "local"
    download = api_alice.get(files_url + "download/", {"cluster": "local", "path": "data.csv"})
    assert download.status_code == HTTPStatus.OK
    assert b"".join(download.streaming_content) == b"a,b\n1,2\n"
    assert "attachment" in download["Content-Disposition"]


def test_the_cluster_may_be_left_out_when_the_project_has_storage_on_one(api_alice, files_url):
    response = api_alice.get(files_url)

    assert response.status_code == HTTPStatus.OK
    assert response.json()["clusters"] == ["local"]


def test_folders_are_made_renamed_and_deleted(api_bob, files_url, folder):
    assert api_bob.post(files_url + "mkdir/", {"path": "raw"}, format="json").status_code == (
        HTTPStatus.CREATED
    )
    assert _upload(api_bob, files_url, "x.bin", b"xyz", path="raw").status_code == (
        HTTPStatus.CREATED
    )

    moved = api_bob.post(
        files_url + "rename/", {"path": "raw", "new_path": "inputs"}, format="json"
    )
    assert moved.status_code == HTTPStatus.OK, moved.json()
    assert (folder / "inputs" / "x.bin").read_bytes() == b"xyz"
    refused = api_bob.post(files_url + "delete/", {"path": "inputs"}, format="json")
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert "not empty" in refused.json()["detail"]
    gone = api_bob.post(files_url + "delete/", {"path": "inputs", "recursive": True}, format="json")
    assert gone.status_code == HTTPStatus.NO_CONTENT
    assert _leftovers(folder) == []


def test_an_upload_over_the_quota_is_413_and_leaves_nothing_behind(
    api_alice, files_url, folder, tenant, settings
):
    ProjectStorage.objects.create(project=tenant.project, quota_bytes=1000)
    assert _upload(api_alice, files_url, "small.txt", b"x" * 600).status_code == (
        HTTPStatus.CREATED
    )

    response = _upload(api_alice, files_url, "big.bin", b"y" * 500)

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    body = response.json()
    assert body["code"] == "storage_quota_exceeded"
    assert "quota of 1000 bytes" in body["detail"]
    assert _leftovers(folder) == ["small.txt"]


def test_a_file_over_the_per_file_limit_is_413_and_leaves_nothing_behind(
    api_alice, files_url, folder, settings
):
    settings.GPUC_STORAGE_MAX_UPLOAD_BYTES = 100

    response = _upload(api_alice, files_url, "big.bin", b"z" * 5000)

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.json()["code"] == "file_too_large"
    assert _leftovers(folder) == []


def test_staff_set_the_quota_and_members_see_it_with_the_usage(
    api_alice, files_url, tenant, alice, bob
):
    alice.is_staff = True
    alice.save()

    storage_quota_set(actor=alice, project=tenant.project, quota_bytes=5_000_000)

    assert api_alice.get(files_url).json()["quota_bytes"] == 5_000_000


def _facility_admin(client):
    """dave, a facility admin (the group, not Django staff), signed in on `client`."""
    dave = factories.UserFactory(username="dave", email="dave@facility.example")
    dave.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    EmailAddress.objects.create(user=dave, email=dave.email, verified=True, primary=True)
    client.force_login(dave)
    return client


def test_a_facility_admin_sets_the_quota_on_the_staff_project_page_and_members_see_it(
    client, api_alice, files_url, tenant
):
    staff = _facility_admin(client)
    page = f"/manage/projects/{tenant.project.uuid}/"
    assert "100.0\xa0GB" in staff.get(page).content.decode()  # the default, before

    response = staff.post(page + "storage/", {"quota": "1.5 GiB"})

    assert response.status_code == HTTPStatus.FOUND and response.url == page
    assert ProjectStorage.objects.get(project=tenant.project).quota_bytes == 1_610_612_736
    shown = staff.get(page).content.decode()
    assert "Storage quota set to 1.5\xa0GB (1610612736 bytes)." in shown
    assert "(1610612736 bytes) for the project" in shown
    assert api_alice.get(files_url).json()["quota_bytes"] == 1_610_612_736


@pytest.mark.parametrize(
    ("typed", "quota"),
    [("1048576", 1_048_576), ("500G", 500 * 1024**3), ("2TB", 2 * 10**12), ("0", 0)],
)
def test_staff_type_quotas_in_bytes_or_with_a_unit(client, tenant, typed, quota):
    staff = _facility_admin(client)

    staff.post(f"/manage/projects/{tenant.project.uuid}/storage/", {"quota": typed})

    assert ProjectStorage.objects.get(project=tenant.project).quota_bytes == quota


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("-5G", "'-5G' is not a size"),
        ("lots", "'lots' is not a size"),
        ("", "the quota is empty"),
        ("1.5", "a whole number of bytes, not 1.5"),
        ("2 EB", "'2 EB' is not a size"),
        ("9999P", "from 0 bytes to 1 EiB"),
    ],
)
def test_a_bad_quota_is_a_400_naming_the_problem_and_changes_nothing(client, tenant, typed, says):
    ProjectStorage.objects.create(project=tenant.project, quota_bytes=7)
    staff = _facility_admin(client)

    response = staff.post(f"/manage/projects/{tenant.project.uuid}/storage/", {"quota": typed})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert says in html.unescape(response.content.decode())
    assert ProjectStorage.objects.get(project=tenant.project).quota_bytes == 7


def test_members_and_outsiders_get_404_from_the_staff_quota_form(client, alice, mallory, tenant):
    for user in (alice, mallory):
        client.force_login(user)
        response = client.post(f"/manage/projects/{tenant.project.uuid}/storage/", {"quota": "1T"})
        assert response.status_code == HTTPStatus.NOT_FOUND
    assert not ProjectStorage.objects.filter(project=tenant.project).exists()
    with pytest.raises(StorageNotFound):
        storage_quota_set(actor=mallory, project=tenant.project, quota_bytes=1)


# --- bad input ------------------------------------------------------------------------------


def test_an_upload_with_no_file_name_is_400(client, alice, files_url, folder):
    client.force_login(alice)

    response = _raw_upload(client, files_url, _multipart("", b"data"))

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "No file was sent" in response.json()["detail"]
    assert _leftovers(folder) == []


def test_an_upload_named_with_10000_characters_is_400(client, alice, files_url, folder):
    client.force_login(alice)

    response = _raw_upload(client, files_url, _multipart("n" * 10_000, b"data"))

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "file name included" in response.json()["detail"]
    assert _leftovers(folder) == []


def test_an_upload_named_with_600_characters_is_400_naming_it(client, alice, files_url, folder):
    client.force_login(alice)

    response = _raw_upload(client, files_url, _multipart("n" * 600, b"data"))

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "nnnnnnnn" in response.json()["detail"]
    assert "longer than" in response.json()["detail"]
    assert _leftovers(folder) == []


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_a_multipart_body_cut_off_leaves_no_file(client, alice, files_url, folder, cut):
    client.force_login(alice)
    body = _multipart("half.bin", os.urandom(300_000))

    response = _raw_upload(client, files_url, body[: int(len(body) * cut)])

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "cut off" in response.json()["detail"]
    assert _leftovers(folder) == []


def test_a_body_that_is_not_multipart_is_400(api_alice, files_url, folder):
    response = api_alice.post(files_url + "upload/?cluster=local", {"a": 1}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "multipart/form-data" in response.json()["detail"]


def test_a_session_upload_passes_the_csrf_check_by_its_header(alice, files_url, folder):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    page = browser.get(files_url.replace("/api/v1", ""))
    assert page.status_code == HTTPStatus.OK
    token = browser.cookies["csrftoken"].value

    without = _raw_upload(browser, files_url, _multipart("a.txt", b"1"))
    with_header = browser.generic(
        "POST",
        files_url + "upload/?cluster=local",
        data=_multipart("a.txt", b"1"),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
        HTTP_X_CSRFTOKEN=token,
    )

    assert without.status_code == HTTPStatus.FORBIDDEN
    assert with_header.status_code == HTTPStatus.CREATED
    assert _leftovers(folder) == ["a.txt"]


# --- confinement ----------------------------------------------------------------------------


@pytest.fixture
def traps(api_alice, files_url, folder, tmp_path) -> Path:
    """What a job could leave in the project folder: links out of it, a FIFO, a device."""
    assert _upload(api_alice, files_url, "data.txt", b"mine").status_code == HTTPStatus.CREATED
    (tmp_path / "secret.txt").write_text("not yours")
    (folder / "leakdir").symlink_to(tmp_path)
    (folder / "leakfile").symlink_to(tmp_path / "secret.txt")
    (folder / "inside").symlink_to("data.txt")
    os.mkfifo(folder / "pipe")
    try:
        os.mknod(folder / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        (folder / "null").symlink_to("/dev/null")  # (not root: a link to a device instead)
    return folder


GET_CASES = [
    ("list", "../"),
    ("list", "/etc"),
    ("list", "leakdir"),
    ("list", "a\x01b"),
    ("download", "../secret.txt"),
    ("download", "/etc/passwd"),
    ("download", "leakdir/secret.txt"),
    ("download", "leakfile"),
    ("download", "inside"),
    ("download", "pipe"),
    ("download", "null"),
    ("download", "data\x1b[31m.txt"),
    ("download", "~/x"),
]


@pytest.mark.parametrize(("action", "path"), GET_CASES)
def test_reading_outside_the_project_folder_is_400_naming_the_path(
    api_alice, files_url, traps, action, path
):
    url = files_url if action == "list" else files_url + "download/"

    response = api_alice.get(url, {"cluster": "local", "path": path})

    assert response.status_code == HTTPStatus.BAD_REQUEST, response
    assert repr(path)[1:-1] in response.json()["detail"]


WRITE_CASES = [
    ("mkdir/", {"path": "../evil"}, "../evil"),
    ("mkdir/", {"path": "leakdir/evil"}, "leakdir/evil"),
    ("mkdir/", {"path": "/tmp/evil"}, "/tmp/evil"),
    ("mkdir/", {"path": "bad\nname"}, "bad\\nname"),
    ("rename/", {"path": "data.txt", "new_path": "../moved"}, "../moved"),
    ("rename/", {"path": "data.txt", "new_path": "leakdir/moved"}, "leakdir/moved"),
    ("rename/", {"path": "leakdir/secret.txt", "new_path": "mine.txt"}, "leakdir/secret.txt"),
    ("delete/", {"path": "leakdir/secret.txt"}, "leakdir/secret.txt"),
    ("delete/", {"path": "../secret.txt"}, "../secret.txt"),
    ("delete/", {"path": "/etc/passwd"}, "/etc/passwd"),
]


@pytest.mark.parametrize(("action", "body", "shown"), WRITE_CASES)
def test_writing_outside_the_project_folder_is_400_naming_the_path(
    api_alice, files_url, traps, tmp_path, action, body, shown
):
    response = api_alice.post(files_url + action, {"cluster": "local", **body}, format="json")

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.json()
    assert shown in response.json()["detail"]
    assert (tmp_path / "secret.txt").read_text() == "not yours"
    assert not (tmp_path / "evil").exists() and not (tmp_path / "moved").exists()


@pytest.mark.parametrize(
    ("name", "directory"),
    [("../evil.txt", ""), ("/tmp/evil.txt", ""), ("ok.txt", "leakdir"), ("ok.txt", "../")],
)
def test_uploading_outside_the_project_folder_is_400_naming_the_path(
    client, alice, files_url, traps, tmp_path, name, directory
):
    client.force_login(alice)

    response = client.generic(
        "POST",
        files_url + f"upload/?cluster=local&path={directory}",
        data=_multipart(name, b"evil"),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.json()
    assert (directory or name) in response.json()["detail"]
    assert not any(p.name.endswith("evil.txt") or p.name == "ok.txt" for p in tmp_path.rglob("*"))
    assert not [p for p in traps.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_deleting_a_link_removes_the_link_not_what_it_points_to(
    api_alice, files_url, traps, tmp_path
):
    response = api_alice.post(
        files_url + "delete/", {"path": "leakdir", "recursive": True}, format="json"
    )

    assert response.status_code == HTTPStatus.NO_CONTENT
    assert not (traps / "leakdir").is_symlink()
    assert (tmp_path / "secret.txt").read_text() == "not yours"


def test_links_and_special_files_are_listed_as_such_and_not_counted(api_alice, files_url, traps):
    listing = api_alice.get(files_url).json()

    kinds = {e["name"]: e["kind"] for e in listing["entries"]}
    assert kinds["leakdir"] == "link"
    assert kinds["pipe"] == "other"
    assert kinds["data.txt"] == "file"
    assert listing["usage_bytes"] == 4


# --- outsiders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("get", "", {}),
        ("get", "download/", {"path": "data.txt"}),
        ("post", "mkdir/", {"path": "x"}),
        ("post", "rename/", {"path": "data.txt", "new_path": "y"}),
        ("post", "delete/", {"path": "data.txt"}),
        ("post", "copy-results/", {"job": "00000000-0000-0000-0000-000000000000"}),
    ],
)
def test_mallory_gets_404_from_every_storage_endpoint(
    api_alice, api_mallory, files_url, folder, method, action, body
):
    _upload(api_alice, files_url, "data.txt", b"mine")

    if method == "get":
        response = api_mallory.get(files_url + action, body)
    else:
        response = api_mallory.post(files_url + action, body, format="json")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert (folder / "data.txt").read_bytes() == b"mine"


def test_mallory_gets_404_uploading_and_nothing_is_written(
    api_mallory, files_url, folder, tmp_path
):
    response = _upload(api_mallory, files_url, "planted.txt", b"evil")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert not any(p.name == "planted.txt" for p in tmp_path.rglob("*"))


def test_mallory_gets_404_from_the_file_browser_page(client, mallory, tenant, local_cluster):
    client.force_login(mallory)

    assert client.get(f"/projects/{tenant.project.uuid}/files/").status_code == (
        HTTPStatus.NOT_FOUND
    )


def test_the_file_browser_page_lists_the_files_and_loads_its_script(
    client, alice, api_alice, files_url, tenant
):
    _upload(api_alice, files_url, "data.csv", b"1,2\n")
    client.force_login(alice)

    page = client.get(f"/projects/{tenant.project.uuid}/files/")

    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert "data.csv" in html
    assert "js/files.js" in html
    assert "GPUC_PROJECT_DIR" in html


def test_a_project_folder_swapped_for_a_link_is_refused(api_alice, files_url, folder, tmp_path):
    assert _upload(api_alice, files_url, "data.txt", b"mine").status_code == HTTPStatus.CREATED
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "theirs.txt").write_text("theirs")
    folder.rename(tmp_path / "moved-away")
    folder.symlink_to(elsewhere)

    listing = api_alice.get(files_url)
    download = api_alice.get(files_url + "download/", {"path": "theirs.txt"})

    assert listing.status_code == HTTPStatus.BAD_REQUEST
    assert download.status_code == HTTPStatus.BAD_REQUEST
    assert "not a folder" in listing.json()["detail"]


def test_a_link_in_place_of_the_folder_between_checks_is_not_followed(folder, tmp_path):
    from jobs.storage import fs

    folder.mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "theirs.txt").write_text("theirs")
    folder.rmdir()
    folder.symlink_to(tmp_path / "other")

    with pytest.raises(fs.BadPath):
        fs.list_dir(str(folder), [])
    with pytest.raises(fs.BadPath):
        fs.open_read(str(folder), ["theirs.txt"])


def test_staff_set_a_quota_in_the_django_admin_and_members_are_held_to_it(
    client, api_alice, files_url, folder, tenant
):
    from django.contrib.auth.models import Permission

    from tests import factories

    staff = factories.UserFactory(username="staff", is_staff=True, is_superuser=True)
    client.force_login(staff)
    assert Permission.objects.filter(codename="add_projectstorage").exists()

    page = client.get("/django-admin/jobs/projectstorage/add/")
    saved = client.post(
        "/django-admin/jobs/projectstorage/add/",
        {"project": tenant.project.pk, "quota_bytes": 10},
    )

    assert page.status_code == HTTPStatus.OK
    assert saved.status_code == HTTPStatus.FOUND
    assert ProjectStorage.objects.get(project=tenant.project).quota_bytes == 10
    refused = _upload(api_alice, files_url, "eleven.txt", b"x" * 11)
    assert refused.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert api_alice.get(files_url).json()["quota_bytes"] == 10
