"""jobs.selectors.jobs_to_forward: the forwarder's read of a batch, from one statement composed
once, answers what select_related(*SPEC_RELATED) answers, and job_spec then reads nothing more."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job
from jobs.selectors import jobs_to_forward
from jobs.services.specs import SPEC_RELATED, job_spec
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)


def _fields(instance: Any) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


@pytest.fixture
def jobs(api_alice, tenant, sim_cluster, allocation, accounts) -> list[Job]:
    target = {"project": str(tenant.project.uuid), "cluster": "sim"}
    batch = {**target, "name": "plain", "script": "true\n", "cpus": 1, "memory_mb": 64}
    batch["time_limit_minutes"] = 5
    session = {**target, "app": "jupyterlab", "cpus": 1, "memory_mb": 1024}
    made = [
        api_alice.post("/api/v1/jobs/", {**batch, "env": {"A": "1"}}, format="json"),
        api_alice.post("/api/v1/sessions/", {**session, "time_limit_minutes": 60}, format="json"),
        api_alice.post("/api/v1/jobs/", batch, format="json"),
    ]
    assert all(r.status_code == HTTPStatus.CREATED for r in made), [r.json() for r in made]
    return list(Job.objects.order_by("pk"))


@pytest.mark.django_db
def test_the_batch_read_is_what_select_related_reads(jobs):
    ids = [job.pk for job in reversed(jobs)]
    expected = list(Job.objects.select_related(*SPEC_RELATED).filter(pk__in=ids).order_by("pk"))

    with CaptureQueriesContext(connection) as read:
        found = jobs_to_forward(ids)
    with CaptureQueriesContext(connection) as after:
        specs = [job_spec(job) for job in found]
        related = [(j.cluster, j.project, j.project.organization) for j in found]
        sessions = [(j.session, j.session.app) for j in found if j.kind == Job.Kind.SESSION]

    assert len(read.captured_queries) == 1
    assert after.captured_queries == []  # job_spec and the relations read nothing more
    assert [job.pk for job in found] == [job.pk for job in expected]
    for job, want in zip(found, expected, strict=True):
        assert _fields(job) == _fields(want)
        assert _fields(job.cluster) == _fields(want.cluster)
        assert _fields(job.project) == _fields(want.project)
        assert _fields(job.project.organization) == _fields(want.project.organization)
    assert specs == [job_spec(job) for job in expected]
    assert len(related) == 3 and len(sessions) == 1
    [(session, app)] = sessions
    assert (session.pk, app.slug) == (jobs[1].session.pk, "jupyterlab")


@pytest.mark.django_db
def test_a_batch_job_has_no_session_and_asking_reads_nothing(jobs):
    [job] = jobs_to_forward([jobs[0].pk])

    with (
        CaptureQueriesContext(connection) as asked,
        pytest.raises(Job.session.RelatedObjectDoesNotExist),
    ):
        _ = job.session

    assert asked.captured_queries == []
    assert jobs_to_forward([]) == []
