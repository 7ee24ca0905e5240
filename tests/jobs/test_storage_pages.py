"""A folder is listed a page at a time (API, web page, by name): 2,500 files come back
complete and ordered through the next links, and back through the previous ones; a small
folder answers in one page as before; a bad page size or cursor is a 400 naming it."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from jobs.storage.paging import MAX_PAGE_SIZE, WEB_PAGE_SIZE

FILES = 2500


@pytest.fixture
def big(folder: Path) -> list[str]:
    """A folder of 2,500 files (written as a job would), named in an order unlike creation's."""
    (folder / "many").mkdir(parents=True)
    names = [f"f-{(i * 7919) % FILES:05d}.txt" for i in range(FILES)]
    for name in names:
        (folder / "many" / name).write_bytes(b"x")
    return sorted(names)


def _query(link: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


def test_2500_files_come_back_complete_and_ordered_page_by_page(api_alice, files_url, big):
    seen: list[str] = []
    pages = []
    query = {"path": "many", "page_size": "1000"}
    while True:
        response = api_alice.get(files_url, query)
        assert response.status_code == HTTPStatus.OK, response.json()
        page = response.json()
        pages.append(page)
        seen += [e["name"] for e in page["entries"]]
        if page["next"] is None:
            break
        assert page["next"].startswith("http://testserver/api/v1/projects/")
        query = _query(page["next"])

    assert [len(p["entries"]) for p in pages] == [1000, 1000, 500]
    assert seen == big
    assert pages[0]["previous"] is None
    assert all(p["path"] == "many" for p in pages)
    assert all(p["entries"][0]["path"] == f"many/{p['entries'][0]['name']}" for p in pages)
    back = api_alice.get(files_url, _query(pages[2]["previous"])).json()
    assert [e["name"] for e in back["entries"]] == big[1000:2000]
    first = api_alice.get(files_url, _query(back["previous"])).json()
    assert [e["name"] for e in first["entries"]] == big[:1000]
    assert first["previous"] is None
    assert _query(first["next"])["page_size"] == "1000"


def test_without_a_page_size_a_page_holds_the_default_of_1000(api_alice, files_url, big):
    page = api_alice.get(files_url, {"path": "many"}).json()

    assert len(page["entries"]) == MAX_PAGE_SIZE
    assert page["next"] is not None


def test_a_file_added_between_pages_is_neither_repeated_nor_skipped(
    api_alice, files_url, folder, big
):
    one = api_alice.get(files_url, {"path": "many", "page_size": "1000"}).json()
    (folder / "many" / "a-new-first.txt").write_bytes(b"n")  # before the cursor: not seen
    (folder / "many" / "z-new-last.txt").write_bytes(b"n")  # after: on the last page
    (folder / "many" / big[1500]).unlink()

    rest = []
    link = one["next"]
    while link:
        page = api_alice.get(files_url, _query(link)).json()
        rest += [e["name"] for e in page["entries"]]
        link = page["next"]

    names = [e["name"] for e in one["entries"]] + rest
    assert names == [*big[:1500], *big[1501:], "z-new-last.txt"]


def test_a_small_folder_answers_in_one_page_with_the_keys_it_always_had(
    api_alice, files_url, folder
):
    folder.mkdir(parents=True)
    (folder / "b.txt").write_bytes(b"bb")
    (folder / "a.txt").write_bytes(b"a")

    body = api_alice.get(files_url).json()

    assert list(body)[:8] == [
        "project",
        "cluster",
        "clusters",
        "path",
        "quota_bytes",
        "usage_bytes",
        "max_upload_bytes",
        "entries",
    ]
    assert [e["name"] for e in body["entries"]] == ["a.txt", "b.txt"]
    assert body["next"] is None
    assert body["previous"] is None


@pytest.mark.parametrize("size", ["0", "-1", "1001", "ten", "1.5", "١٠"])
def test_a_bad_page_size_is_a_400_naming_it(api_alice, files_url, folder, size):
    response = api_alice.get(files_url, {"page_size": size})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    body = response.json()
    assert body["field"] == "page_size"
    assert f"page_size must be a whole number from 1 to 1000, not {size!r}" == body["detail"]


@pytest.mark.parametrize(
    "cursor", ["not-a-cursor!", "eDpmb28", "YTou", "YTphL2I", "YTph+2I", "Yjo"]
)
def test_a_bad_cursor_is_a_400_naming_it(api_alice, files_url, folder, cursor):
    response = api_alice.get(files_url, {"cursor": cursor})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    body = response.json()
    assert body["field"] == "cursor"
    assert body["detail"] == f"Invalid cursor {cursor!r}: use the next or previous link"


def test_mallory_gets_404_whatever_the_page_she_asks_for(api_mallory, files_url, folder):
    response = api_mallory.get(files_url, {"page_size": "0", "cursor": "bad"})

    assert response.status_code == HTTPStatus.NOT_FOUND


def test_the_file_browser_shows_a_page_and_a_next_link_to_the_rest(client, alice, tenant, big):
    client.force_login(alice)
    url = f"/projects/{tenant.project.uuid}/files/"

    first = client.get(url, {"path": "many"})
    html = first.content.decode()
    link = html.split('rel="next"')[0].rsplit('href="?', 1)[1].split('"')[0]
    second = client.get(url + "?" + link.replace("&amp;", "&"))

    assert first.status_code == HTTPStatus.OK
    assert big[WEB_PAGE_SIZE - 1] in html
    assert big[WEB_PAGE_SIZE] not in html
    assert 'rel="prev"' not in html
    assert second.status_code == HTTPStatus.OK
    page_two = second.content.decode()
    assert big[WEB_PAGE_SIZE] in page_two and big[2 * WEB_PAGE_SIZE - 1] in page_two
    assert big[WEB_PAGE_SIZE - 1] not in page_two
    assert 'rel="prev"' in page_two and 'rel="next"' in page_two


def test_the_file_browser_answers_a_bad_cursor_with_a_400_saying_so(client, alice, tenant, big):
    client.force_login(alice)

    page = client.get(f"/projects/{tenant.project.uuid}/files/", {"cursor": "junk!"})

    assert page.status_code == HTTPStatus.BAD_REQUEST
    assert "Invalid cursor" in page.content.decode()
