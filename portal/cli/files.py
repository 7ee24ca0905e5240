"""gpuc ls-files and gpuc cp: the project's storage on a cluster ($GPUC_PROJECT_DIR in jobs).

A remote path starts with ':' (as with scp/rsync): `gpuc cp data.csv :inputs/` uploads,
`gpuc cp :inputs/data.csv .` downloads. Uploads stream the file from disk (never read whole)
and downloads are written to a temporary file renamed into place when complete."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import requests

from portal.cli.client import EXIT_OK, EXIT_USAGE, Client, CliError, _api_error, failure_reason
from portal.cli.download import BLOCK, save_download
from portal.cli.output import print_json, print_table, when
from portal.cli.resolve import default_for, resolve_project


def _where(client: Client, args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    project = args.project or default_for("project")
    if not project:
        raise CliError(
            "give --project (or set a default: 'gpuc config set project …', or GPUC_PROJECT)",
            EXIT_USAGE,
        )
    cluster = args.cluster or default_for("cluster") or ""
    base = f"projects/{resolve_project(client, project)}/files/"
    return base, ({"cluster": cluster} if cluster else {})


def cmd_ls_files(args: argparse.Namespace, client: Client) -> int:
    base, params = _where(client, args)
    path = (args.path or "").lstrip(":")
    pages = list(client.pages(base, {**params, "path": path}))
    listing = {k: v for k, v in pages[0].items() if k not in ("next", "previous")}
    listing["entries"] = [entry for page in pages for entry in page.get("entries", [])]
    if args.json:
        print_json(listing)
        return EXIT_OK
    rows = [
        (
            e.get("name", "") + ("/" if e.get("kind") == "directory" else ""),
            e.get("size", "") if e.get("kind") == "file" else e.get("kind", ""),
            when(e.get("modified")),
        )
        for e in listing["entries"]
    ]
    print_table(("NAME", "BYTES", "MODIFIED"), rows)
    print(
        f"{listing.get('cluster')}: {listing.get('usage_bytes')} of "
        f"{listing.get('quota_bytes')} bytes used",
        file=sys.stderr,
    )
    return EXIT_OK


class _Multipart:
    """A multipart/form-data body with one file, read from disk as it is sent."""

    def __init__(self, handle: BinaryIO, name: str, size: int) -> None:
        self.boundary = f"gpuc-{uuid.uuid4().hex}"
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        self.parts: list[bytes | BinaryIO] = [
            (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode(),
            handle,
            f"\r\n--{self.boundary}--\r\n".encode(),
        ]
        self.length = sum(len(p) for p in self.parts if isinstance(p, bytes)) + size
        self.sent = 0
        self._buffer = b""

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        size = BLOCK if size is None or size < 0 else size
        while not self._buffer and self.parts:
            part = self.parts[0]
            if isinstance(part, bytes):
                self._buffer = part
                self.parts.pop(0)
            else:
                self._buffer = part.read(BLOCK)
                if not self._buffer:
                    self.parts.pop(0)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.sent += len(out)
        return out


def _upload(client: Client, base: str, params: dict[str, str], source: str, target: str) -> int:
    local = Path(source)
    if not local.is_file():
        raise CliError(f"{source}: no such file", EXIT_USAGE)
    directory, _, name = target.rpartition("/")
    name = name or local.name
    size = local.stat().st_size
    # Refused here rather than half-way through sending it (the portal would refuse it too);
    # one entry is enough to learn the quota and the usage.
    listing = client.get(base, {**params, "path": directory, "page_size": 1})
    room = int(listing.get("quota_bytes", 0)) - int(listing.get("usage_bytes", 0))
    if size > int(listing.get("max_upload_bytes", size)):
        raise CliError(
            f"{source} ({size} bytes) is larger than the limit of "
            f"{listing.get('max_upload_bytes')} bytes per file"
        )
    if size > room:
        raise CliError(
            f"{source} ({size} bytes) does not fit in the project's storage: "
            f"{max(room, 0)} of {listing.get('quota_bytes')} bytes are free"
        )
    with local.open("rb") as handle:
        body = _Multipart(handle, name, size)
        try:
            response = client.session.post(
                client.base + base + "upload/",
                params={**params, "path": directory},
                data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={body.boundary}"},
                timeout=(10, 3600),
            )
        except requests.RequestException as exc:
            raise CliError(f"upload of {source} broke off: {failure_reason(exc)}") from None
    if response.status_code >= 400:
        raise _api_error(response)
    entry: dict[str, Any] = response.json()
    print(f":{entry.get('path')} ({entry.get('size')} bytes)", file=sys.stderr)
    return EXIT_OK


def _download(client: Client, base: str, params: dict[str, str], source: str, target: str) -> int:
    response = client.request(
        "GET", base + "download/", params={**params, "path": source}, stream=True
    )
    name = source.rstrip("/").rpartition("/")[2] or "download"
    destination = None if target == "-" else Path(target)
    if destination is not None and (destination.is_dir() or target.endswith("/")):
        destination = destination / name
    return save_download(response, destination, what=f":{source}")


def cmd_cp(args: argparse.Namespace, client: Client) -> int:
    source, target = args.source, args.target
    if source.startswith(":") == target.startswith(":"):
        raise CliError(
            "one of SOURCE and TARGET must be a project path starting with ':' "
            "(gpuc cp data.csv :inputs/  or  gpuc cp :inputs/data.csv .)",
            EXIT_USAGE,
        )
    base, params = _where(client, args)
    if target.startswith(":"):
        return _upload(client, base, params, source, target[1:])
    return _download(client, base, params, source[1:], target)
