"""Project storage against a live portal (a real HTTP server and socket): a 200 MB upload is
streamed to disk without the portal's memory growing by the file's size and downloads back
with the same SHA-256; a body cut off on the wire leaves no file."""

from __future__ import annotations

import hashlib
import socket
import tracemalloc
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from accounts.services import api_token_create

SIZE = 200 * 1024 * 1024
BLOCK = 1024 * 1024
BOUNDARY = "gpucLiveBoundary0123"


class _MultipartBody:
    """A multipart body of SIZE pseudo-random bytes, produced as it is read (never whole in
    memory here either) with its SHA-256 computed along the way."""

    def __init__(self, name: str, size: int = SIZE) -> None:
        self.size = size
        self.head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.length = len(self.head) + size + len(self.tail)
        self.sha256 = hashlib.sha256()
        self._sent = 0
        self._buffer = self.head
        self._block = 0

    def __len__(self) -> int:
        return self.length

    def _next_block(self) -> bytes:
        if self._block * BLOCK >= self.size:
            return b""
        seed = hashlib.sha256(str(self._block).encode()).digest()
        data = (seed * (BLOCK // len(seed)))[:BLOCK]
        self._block += 1
        self.sha256.update(data)
        return data

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        if self._sent >= len(self._buffer):
            self._buffer = self._next_block()
            if not self._buffer:
                self._buffer, self.tail = self.tail, b""
            self._sent = 0
        out = self._buffer[self._sent : self._sent + size]
        self._sent += len(out)
        return out


def _vm(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.fixture
def live(transactional_db, live_server, tenant, alice, local_cluster, tmp_path):
    _, raw = api_token_create(actor=alice, name="storage test")
    base = f"{live_server.url}/api/v1/projects/{tenant.project.uuid}/files/"
    folder = tmp_path / "jobs" / "projects" / "vision-lab.folding"
    return base, {"Authorization": f"Bearer {raw}"}, folder


def _post(base: str, auth: dict[str, str], body: _MultipartBody) -> requests.Response:
    return requests.post(
        base + "upload/?cluster=local",
        data=body,
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=300,
    )


def test_a_200_mb_upload_streams_to_disk_and_downloads_back_with_the_same_sha256(live):
    base, auth, folder = live
    assert _post(base, auth, _MultipartBody("warm-up.bin", size=BLOCK)).status_code == 201
    body = _MultipartBody("big.bin")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the RSS now
    rss_before = _vm("VmRSS")

    response = _post(base, auth, body)

    peak_growth = _vm("VmHWM") - rss_before
    assert response.status_code == HTTPStatus.CREATED, response.text
    assert response.json()["size"] == SIZE
    assert (folder / "big.bin").stat().st_size == SIZE
    # Python's own allocations over a second upload, traced (tracemalloc's bookkeeping would
    # inflate the RSS figure above, so it is measured apart).
    tracemalloc.start()
    try:
        assert _post(base, auth, _MultipartBody("again.bin")).status_code == 201
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"\n200 MiB upload: peak RSS growth {peak_growth / 2**20:.1f} MiB (server and client "
        f"in this process), peak Python allocations {traced_peak / 2**20:.1f} MiB"
    )
    assert peak_growth < SIZE // 8  # 25 MiB: the file never sits in memory
    assert traced_peak < SIZE // 8

    digest = hashlib.sha256()
    with requests.get(
        base + "download/",
        params={"cluster": "local", "path": "big.bin"},
        headers=auth,
        stream=True,
        timeout=300,
    ) as download:
        assert download.status_code == HTTPStatus.OK
        for chunk in download.iter_content(BLOCK):
            digest.update(chunk)
    assert digest.hexdigest() == body.sha256.hexdigest()


def test_an_upload_cut_off_on_the_wire_leaves_no_file(live):
    base, auth, folder = live
    url = urlsplit(base)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n\r\n'
    ).encode()
    declared = len(head) + 4 * BLOCK + 64
    request = (
        f"POST {url.path}upload/?cluster=local HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: {auth['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {declared}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request + head + b"x" * (2 * BLOCK))  # half of what was declared
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    assert answer.split(b" ", 2)[1] == b"400", answer[:300]
    assert b"cut off" in answer
    assert not folder.exists() or list(folder.iterdir()) == []


def test_two_uploads_racing_for_the_last_of_the_quota_never_overspend_it(live, tenant):
    from concurrent.futures import ThreadPoolExecutor

    from jobs.storage.models import ProjectStorage

    base, auth, folder = live
    ProjectStorage.objects.create(project=tenant.project, quota_bytes=50 * BLOCK)

    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda name: _post(base, auth, _MultipartBody(name, size=30 * BLOCK)),
                ["one.bin", "two.bin"],
            )
        )

    codes = sorted(a.status_code for a in answers)
    assert HTTPStatus.REQUEST_ENTITY_TOO_LARGE in codes
    assert set(codes) <= {HTTPStatus.CREATED, HTTPStatus.REQUEST_ENTITY_TOO_LARGE}
    kept = list(folder.iterdir())
    assert sum(p.stat().st_size for p in kept) <= 50 * BLOCK
    assert len(kept) == codes.count(HTTPStatus.CREATED)


def test_an_upload_over_the_quota_is_answered_413_with_its_reason_while_still_sending(live, tenant):
    from jobs.storage.models import ProjectStorage

    base, auth, folder = live
    ProjectStorage.objects.create(project=tenant.project, quota_bytes=BLOCK)

    response = _post(base, auth, _MultipartBody("too-big.bin", size=20 * BLOCK))

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.json()["code"] == "storage_quota_exceeded"
    assert not folder.exists() or list(folder.iterdir()) == []
