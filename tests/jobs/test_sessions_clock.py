"""A session's page shows its time left, its idle countdown and its cost so far, computed
on the server (jobs.selectors.session_clock) and refreshed live."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from jobs.models import Job, Session
from jobs.selectors import session_clock
from jobs.services.sessions import project_idle_limit_set
from tests.jobs import session_apps
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)


@pytest.fixture
def running_session(alice, tenant, sim_cluster, allocation, accounts) -> Session:
    return session_apps.running_session(
        user=alice,
        project=tenant.project,
        cluster=sim_cluster,
        gpus=1,
        gpu_type="h100",
        cpus=2,
        memory_mb=4096,
    )


def test_the_clock_counts_time_left_idle_and_cost_from_the_jobs_rates(running_session):
    job = running_session.job
    Session.objects.filter(pk=running_session.pk).update(
        last_activity_at=job.started_at + timedelta(minutes=20)
    )
    running_session.refresh_from_db()

    clock = session_clock(session=running_session, now=job.started_at + timedelta(minutes=30))

    assert clock.running
    assert clock.time_left_seconds == 90 * 60  # 120 min limit − 30 min run
    assert clock.idle_left_seconds == 20 * 60  # activity at 20 min + 30 min limit − 30
    # 1 h100 (2 SU/h) + 2 CPUs (0.1 SU/h each) + 4 GB (0.01 SU/h each) for half an hour
    assert clock.cost_so_far == Decimal("1.12")


def test_the_idle_countdown_follows_the_projects_limit(running_session, alice, tenant):
    project_idle_limit_set(actor=alice, project=tenant.project, idle_minutes=10)
    job = running_session.job
    clock = session_clock(session=running_session, now=job.started_at + timedelta(minutes=4))
    assert clock.idle_minutes == 10
    assert clock.idle_left_seconds == 6 * 60


def test_the_countdowns_stop_at_zero_and_the_cost_at_the_time_limit(running_session):
    job = running_session.job
    clock = session_clock(session=running_session, now=job.started_at + timedelta(hours=5))
    assert clock.time_left_seconds == 0
    assert clock.idle_left_seconds == 0
    assert clock.cost_so_far == Decimal("4.48")  # two hours, not five


def test_an_ended_session_shows_what_it_was_charged(running_session):
    job = running_session.job
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.CANCELLED, charged_cost=Decimal("0.75"), ended_at=timezone.now()
    )
    running_session.job.refresh_from_db()
    clock = session_clock(session=running_session)
    assert not clock.running
    assert clock.time_left_seconds is None
    assert clock.cost_so_far == Decimal("0.75")


def test_the_job_page_of_a_session_shows_the_live_clock(client, alice, running_session):
    client.force_login(alice)
    page = client.get(f"/jobs/{running_session.job.uuid}/").content.decode()
    assert 'class="session-clock"' in page
    assert f'hx-get="/jobs/{running_session.job.uuid}/session-clock/"' in page
    assert "data-countdown=" in page
    assert "/static/js/session_clock.js" in page
    assert "<script>" not in page


def test_the_sessions_page_lists_each_sessions_clock(client, alice, running_session):
    client.force_login(alice)
    page = client.get("/interactive/").content.decode()
    assert f'id="session-clock-{running_session.job.uuid}"' in page
    assert "Cost so far" in page


def test_the_clock_partial_refreshes_the_figures(client, alice, running_session):
    client.force_login(alice)
    answer = client.get(f"/jobs/{running_session.job.uuid}/session-clock/")
    assert answer.status_code == 200
    body = answer.content.decode()
    assert "Time left" in body and "Stops if idle in" in body and " SU" in body


def test_mallory_gets_a_404_for_the_clock(client, mallory, running_session):
    client.force_login(mallory)
    assert client.get(f"/jobs/{running_session.job.uuid}/session-clock/").status_code == 404


def test_the_sessions_page_uses_the_projects_own_idle_limit(
    client, alice, tenant, running_session, django_assert_max_num_queries
):
    project_idle_limit_set(actor=alice, project=tenant.project, idle_minutes=12)
    client.force_login(alice)
    client.get("/interactive/")  # warm per-process caches (rates, content types)
    with django_assert_max_num_queries(20):
        page = client.get("/interactive/").content.decode()
    assert "12 minutes" in page
