"""A project's managers set how long its sessions may sit idle (default 30 minutes, never
above a cluster's maximum); the culler uses it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job, ProjectSessionSettings, Session
from jobs.services import cluster_sync
from jobs.services.sessions import (
    idle_limit,
    project_idle_limit_set,
    sessions_stop_idle,
)
from portal.errors import PermissionDenied
from quotas.models import Cluster
from tests import factories
from tests.jobs.session_apps import (
    jupyterlab_app,  # noqa: F401 (autouse)
    running_session,
)


def _url(project) -> str:
    return f"/api/v1/projects/{project.uuid}/session-settings/"


def test_a_project_without_its_own_limit_uses_the_default_of_30_minutes(api_bob, tenant):
    answer = api_bob.get(_url(tenant.project))
    assert answer.status_code == 200
    assert answer.json()["idle_minutes"] == 30
    assert answer.json()["can_manage"] is False


def test_the_pi_sets_the_idle_limit_through_the_api(api_alice, tenant, sim_cluster):
    answer = api_alice.put(_url(tenant.project), {"idle_minutes": 10}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["idle_minutes"] == 10
    assert ProjectSessionSettings.objects.get(project=tenant.project).idle_minutes == 10
    assert idle_limit(sim_cluster, project=tenant.project) == timedelta(minutes=10)


def test_an_idle_limit_above_the_clusters_maximum_is_a_400_naming_the_field(
    api_alice, tenant, sim_cluster
):
    sim_cluster.options = {**sim_cluster.options, "max_session_idle_minutes": 60}
    sim_cluster.save()
    answer = api_alice.put(_url(tenant.project), {"idle_minutes": 61}, format="json")
    assert answer.status_code == 400
    assert answer.json()["field"] == "idle_minutes"
    assert "maximum of 60 minutes" in answer.json()["detail"]
    assert not ProjectSessionSettings.objects.exists()


@pytest.mark.parametrize("value", [0, -5, "ten", None])
def test_an_idle_limit_that_is_not_a_positive_number_is_a_400(api_alice, tenant, value):
    answer = api_alice.put(_url(tenant.project), {"idle_minutes": value}, format="json")
    assert answer.status_code == 400
    assert "idle_minutes" in answer.content.decode()
    assert not ProjectSessionSettings.objects.exists()


def test_a_member_who_does_not_manage_the_project_is_refused(api_bob, tenant):
    answer = api_bob.put(_url(tenant.project), {"idle_minutes": 10}, format="json")
    assert answer.status_code == 403
    assert not ProjectSessionSettings.objects.exists()


def test_mallory_sees_nothing_and_sets_nothing(api_mallory, tenant):
    assert api_mallory.get(_url(tenant.project)).status_code == 404
    answer = api_mallory.put(_url(tenant.project), {"idle_minutes": 5}, format="json")
    assert answer.status_code == 404
    assert not ProjectSessionSettings.objects.exists()


def test_the_service_refuses_a_non_manager(bob, tenant):
    with pytest.raises(PermissionDenied):
        project_idle_limit_set(actor=bob, project=tenant.project, idle_minutes=5)


def test_a_cluster_maximum_still_caps_a_larger_project_limit(alice, tenant, sim_cluster):
    cluster = factories.ClusterFactory(
        name="big", kind=Cluster.Kind.SIMULATED, options={"max_session_idle_minutes": 120}
    )
    sim_cluster.options = {**sim_cluster.options, "max_session_idle_minutes": 15}
    sim_cluster.save()
    project_idle_limit_set(actor=alice, project=tenant.project, idle_minutes=90)
    assert idle_limit(cluster, project=tenant.project) == timedelta(minutes=90)
    assert idle_limit(sim_cluster, project=tenant.project) == timedelta(minutes=15)


def test_the_pi_sets_it_on_the_project_page_and_bob_sees_it(client, alice, bob, tenant):
    client.force_login(alice)
    page = client.get(f"/projects/{tenant.project.uuid}/").content.decode()
    assert 'name="idle_minutes"' in page
    answer = client.post(
        f"/projects/{tenant.project.uuid}/session-idle-limit/", {"idle_minutes": "12"}
    )
    assert answer.status_code == 302
    assert ProjectSessionSettings.objects.get(project=tenant.project).idle_minutes == 12

    client.force_login(bob)
    page = client.get(f"/projects/{tenant.project.uuid}/").content.decode()
    assert "12 minutes" in page
    assert 'name="idle_minutes"' not in page
    client.post(f"/projects/{tenant.project.uuid}/session-idle-limit/", {"idle_minutes": "99"})
    assert ProjectSessionSettings.objects.get(project=tenant.project).idle_minutes == 12


def test_mallory_cannot_post_the_web_form(client, mallory, tenant):
    client.force_login(mallory)
    answer = client.post(
        f"/projects/{tenant.project.uuid}/session-idle-limit/", {"idle_minutes": "5"}
    )
    assert answer.status_code == 404
    assert not ProjectSessionSettings.objects.exists()


def test_the_culler_stops_a_session_idle_past_its_projects_limit(
    alice, tenant, sim, sim_cluster, allocation, accounts
):
    job = running_session(user=alice, project=tenant.project, cluster=sim_cluster).job
    Session.objects.filter(job=job).update(last_activity_at=timezone.now() - timedelta(minutes=8))
    assert sessions_stop_idle() == []  # the default 30 minutes have not passed

    project_idle_limit_set(actor=alice, project=tenant.project, idle_minutes=5)
    assert [j.pk for j in sessions_stop_idle()] == [job.pk]
    cluster_sync(cluster=sim_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED


def test_the_openapi_schema_documents_the_idle_limit_endpoint(api_alice):
    schema = api_alice.get("/api/schema/?format=json").json()
    operations = schema["paths"]["/api/v1/projects/{uuid}/session-settings/"]
    assert set(operations) >= {"get", "put"}
    body = operations["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/ProjectSessionSettingsUpdate")
