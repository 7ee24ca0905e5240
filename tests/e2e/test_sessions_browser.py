"""A researcher starts a JupyterLab session from the web on the real Slurm, waits for it on
the sessions page (with its live clock), opens it through the real proxy (Debian's nginx with
deploy/sessions/nginx.conf.in) and sees JupyterLab load in Debian's Chromium."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from accounts.models import User
from jobs.models import Job
from jobs.services import cluster_sync, job_cancel, job_forward
from quotas.models import Allocation, Cluster
from tests.conftest import wait_until
from tests.e2e.conftest import Browser, screenshot, sign_in, verified
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)
from tests.jobs.slurm.conftest import (  # noqa: F401 (fixtures)
    slurm_allocation,
    slurm_cluster,
    slurm_site,
)
from tests.jobs.slurm.test_sessions import Proxy, proxy  # noqa: F401 (fixture)

JUPYTERLAB_LOAD_MS = 90_000  # JupyterLab's first load builds its whole UI from many bundles


@pytest.mark.django_db(transaction=True)
def test_a_session_started_from_the_web_opens_jupyterlab_through_the_proxy(
    browser: Browser,
    proxy: Proxy,  # noqa: F811 (the imported fixture)
    slurm_cluster: Cluster,  # noqa: F811
    slurm_allocation: Allocation,  # noqa: F811
    tenant: Any,
    alice: User,
    purge_broker: None,
) -> None:
    page = browser()
    sign_in(page, verified(alice).username)

    page.goto("/interactive/")
    page.locator("select[name=app]").select_option(value="jupyterlab")
    page.locator("select[name=project]").select_option(value=str(tenant.project.uuid))
    page.locator("select[name=cluster]").select_option(value=slurm_cluster.name)
    page.locator("input[name=cpus]").fill("1")
    page.locator("input[name=memory_mb]").fill("1024")
    page.locator("input[name=time_limit_minutes]").fill("10")
    page.locator("form:has(select[name=app]) button[type=submit]").click()
    expect(page.locator(".messages")).to_contain_text("started")

    job = Job.objects.get(kind=Job.Kind.SESSION, user=alice)
    try:
        job_forward(job_id=job.pk)  # what the worker would do on commit

        def running() -> bool:
            cluster_sync(cluster=slurm_cluster)
            job.refresh_from_db()
            assert not job.is_final, (job.state, job.state_reason)
            return job.state == Job.State.RUNNING

        wait_until(running, timeout=120, what="the session's job to run")

        # The sessions page shows it running with its live clock, counting down.
        page.goto("/interactive/")
        clock = page.locator(f"#session-clock-{job.uuid}")
        expect(clock).to_contain_text("Cost so far")
        expect(clock.locator(".time-left")).to_contain_text("min")
        first = clock.locator(".time-left").inner_text()
        page.wait_for_timeout(2_100)
        assert clock.locator(".time-left").inner_text() != first, "the countdown ticks"
        screenshot(page, "sessions-running")

        # The proxy is another host:port in front of the portal: the browser's portal login
        # goes with it, as it would on one host in production.
        proxy_host = urlsplit(proxy.url).hostname
        cookies = page.context.cookies()
        page.context.add_cookies(
            [
                {"name": c["name"], "value": c["value"], "domain": proxy_host, "path": "/"}
                for c in cookies
                if c["name"] == "sessionid"
            ]
        )

        def jupyterlab_loads() -> bool:
            page.goto(f"{proxy.url}/sessions/{job.uuid}/lab")
            if page.locator("#jp-main-dock-panel").count() == 0:
                try:
                    page.locator("#jp-main-dock-panel").wait_for(timeout=JUPYTERLAB_LOAD_MS)
                except Exception:  # the app may still be starting: the portal's waiting page
                    return False
            return True

        wait_until(jupyterlab_loads, timeout=240, what=lambda: f"JupyterLab to load: {proxy.log()}")
        expect(page).to_have_title("JupyterLab", timeout=JUPYTERLAB_LOAD_MS)
        assert "token=" not in page.url
        screenshot(page, "session-jupyterlab")
    finally:
        job.refresh_from_db()
        if not job.is_final and job.user is not None:
            job_cancel(user=job.user, job=job)
