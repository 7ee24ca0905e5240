"""Browser end-to-end fixtures: Debian's headless Chromium driven by Playwright (sync API)
against pytest-django's live_server, a local-backend cluster and a real Celery worker.

Playwright never downloads a browser here: it launches /usr/bin/chromium (deploy/browser-up.sh
installs it; `make test` runs that first). Without it the tests fail in CI and skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.core.cache import cache
from django.db import connections
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

from accounts.models import User
from jobs.models import ClusterAccount
from portal.celery import app as celery_app
from quotas.models import Allocation, Cluster, Rate
from quotas.services import ledger_credit
from tests import factories

# live_server runs in a thread of this process, and Playwright's sync API keeps an asyncio loop
# running in the test thread: Django's async-safety guard would refuse every ORM call the test
# makes between browser steps without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = factories.PASSWORD
TIMEOUT_MS = 20_000  # what any single browser step may take (the job runs in seconds)
SCREENSHOTS = os.environ.get("E2E_SCREENSHOT_DIR", "")  # set to keep screenshots of key pages


@pytest.fixture(scope="session")
def _chromium() -> Path:
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: run `bash deploy/browser-up.sh` (apt-get install chromium) "
            "to run the browser end-to-end tests"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    # allauth's sign-in rate limits live in the (Redis) cache: each test starts afresh.
    cache.clear()
    yield
    cache.clear()


Browser = Callable[[], Page]  # opens a new, isolated browser (its own profile) on a page


def policy_complaint(text: str) -> bool:
    """A console message saying the page broke its Content-Security-Policy (or that Chromium
    cannot read the Permissions-Policy)."""
    return "Content Security Policy" in text or "Permissions-Policy" in text


@pytest.fixture
def browser(_chromium: Path, live_server: Any, tmp_path: Path, settings: Any) -> Iterator[Browser]:
    """A factory of isolated browsers (fresh user-data dir each, so no shared cookies), all
    pointed at live_server; each page fails a step after TIMEOUT_MS. A test whose pages log a
    CSP violation (an inline script, style or handler, anything from another host) fails."""
    # Mails link to SITE_URL, as in production: here, the live server.
    settings.SITE_URL = live_server.url
    expect.set_options(timeout=TIMEOUT_MS)
    complaints: list[str] = []
    with sync_playwright() as playwright:
        contexts: list[Any] = []

        def note_complaint(message: ConsoleMessage) -> None:
            if policy_complaint(message.text):
                complaints.append(f"{message.page.url if message.page else ''}: {message.text}")

        def open_browser() -> Page:
            profile = tmp_path / f"chromium-profile-{len(contexts)}"
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(_chromium),
                headless=True,
                args=CHROMIUM_ARGS,
                base_url=live_server.url,
                viewport={"width": 1280, "height": 900},
                accept_downloads=True,
                reduced_motion="reduce",  # charts draw at once: screenshots show final bars
            )
            contexts.append(context)
            context.on("console", note_complaint)
            context.set_default_timeout(TIMEOUT_MS)
            return context.pages[0] if context.pages else context.new_page()

        try:
            yield open_browser
        finally:
            for context in contexts:
                context.close()
            # While Playwright's loop runs, Django keeps this thread's database connections in
            # a context-local store (asgiref treats the thread as async): close them before it
            # stops, or they outlive the test and block dropping the test database.
            connections.close_all()
    # the profiles are temporary; drop them now rather than at pytest's tmp cleanup
    for profile in tmp_path.glob("chromium-profile-*"):
        shutil.rmtree(profile, ignore_errors=True)
    assert complaints == [], "the pages broke their Content-Security-Policy"


def verified(user: User) -> User:
    """Give the user a verified primary email address (allauth requires one to sign in)."""
    EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )
    return user


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Sign in through allauth's form and wait for the dashboard."""
    page.goto("/accounts/login/")
    page.locator("input[name=login]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/")
    assert page.locator("h1").inner_text() == "Dashboard"


def screenshot(page: Page, name: str) -> Path | None:
    """Save a full-page screenshot under $E2E_SCREENSHOT_DIR (when set)."""
    if not SCREENSHOTS:
        return None
    target = Path(SCREENSHOTS) / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    return target


@pytest.fixture
def local_cluster(tmp_path: Path, settings: Any, tenant: Any, alice: User) -> Cluster:
    """A local-backend cluster (real subprocesses) priced at 1 SU per CPU-second and 2 SU per
    GPU-second, with 100,000 SU for alice's project and a cluster account for alice."""
    settings.GPUC_LOCAL_BACKEND_ENABLED = True
    cluster = factories.ClusterFactory(
        name="local", kind=Cluster.Kind.LOCAL, options={"root": str(tmp_path / "jobs")}
    )
    factories.RateFactory(
        cluster=cluster, resource=Rate.Resource.CPU_HOUR, su_per_unit=Decimal(3600)
    )
    factories.RateFactory(
        cluster=cluster,
        resource=Rate.Resource.GPU_HOUR,
        gpu_type="",
        su_per_unit=Decimal(7200),
    )
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[cluster])
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(100_000), key="e2e-local")
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    return cluster


@pytest.fixture
def local_allocation(local_cluster: Cluster) -> Allocation:
    return Allocation.objects.get(clusters=local_cluster)


@pytest.fixture
def celery_worker(local_cluster: Cluster, worker: None) -> Iterator[None]:
    """The real Celery worker (`worker`), with the local cluster in place."""
    yield


@pytest.fixture
def worker() -> Iterator[None]:
    """A real Celery worker on the Redis broker (CELERY_BROKER_URL), and a beat thread asking it
    to sync every cluster every 0.3 s (and push the project accounts of clusters that manage
    them every second), as Celery beat does every few seconds in production."""
    from celery.contrib.testing.worker import start_worker

    from jobs.tasks import accounts_sync_all_task, sync_all_clusters_task

    celery_app.control.purge()
    stop = threading.Event()

    def beat() -> None:
        tick = 0
        while not stop.wait(0.3):
            sync_all_clusters_task.delay()
            tick += 1
            if tick % 3 == 0:
                accounts_sync_all_task.delay()

    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
        ticker = threading.Thread(target=beat, daemon=True)
        ticker.start()
        yield
        stop.set()
        ticker.join()
    celery_app.control.purge()


@pytest.fixture
def purge_broker() -> Iterator[None]:
    """Drop the tasks queued by services (forwarding, syncs) that no worker will run here."""
    yield
    celery_app.control.purge()


# Every document a watched page loads reports how far it scrolls sideways once loaded.
OVERFLOW_TAG = "e2e-overflow"
_MEASURE_ON_LOAD = (
    "window.addEventListener('load', () => setTimeout(() => console.log("
    f"'{OVERFLOW_TAG} ' + (document.documentElement.scrollWidth - window.innerWidth) + ' ' + "
    "location.pathname + location.search), 50));"
)
_OVERFLOW_NOW = "document.documentElement.scrollWidth - window.innerWidth"


class SidewaysScroll:
    """Sizes a page's viewport to `width` and measures, after every navigation (each document
    it loads) and whenever `check` is called (after an in-place update), whether the page
    scrolls sideways: document.documentElement.scrollWidth must not exceed innerWidth."""

    def __init__(self, page: Page, width: int) -> None:
        self.page = page
        self.seen: list[tuple[str, int]] = []
        page.set_viewport_size({"width": width, "height": 900})
        page.add_init_script(_MEASURE_ON_LOAD)
        page.on("console", self._note)

    def _note(self, message: ConsoleMessage) -> None:
        if message.text.startswith(f"{OVERFLOW_TAG} "):
            _, pixels, url = message.text.split(" ", 2)
            self.seen.append((url, int(pixels)))

    def check(self) -> None:
        overflow = self.page.evaluate(_OVERFLOW_NOW)
        assert overflow <= 0, f"{self.page.url} scrolls sideways by {overflow}px"

    def pages(self) -> list[str]:
        """Every page measured so far (paths, in order); fails if any scrolled sideways."""
        self.check()
        self.page.wait_for_timeout(150)  # the last load's report is on its way
        wide = [(url, pixels) for url, pixels in self.seen if pixels > 0]
        assert wide == [], f"pages that scroll sideways (path, px): {wide}"
        return [url for url, _ in self.seen]
