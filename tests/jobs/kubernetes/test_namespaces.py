"""Project slugs are unique only within an organization: two organizations' projects with the
same slug must never share a Kubernetes namespace (nor its GPU quota, ConfigMaps and Jobs)."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ProjectMember, User
from jobs.models import ClusterAccount, Job
from jobs.services import cluster_sync, job_forward
from quotas.models import Allocation, Cluster
from quotas.services import ledger_credit
from tests import factories
from tests.conftest import Tenant
from tests.k8s_server import FakeKubernetes

BODY: dict[str, Any] = {
    "cluster": "kube",
    "name": "train",
    "script": "echo training\n",
    "gpus": 1,
    "cpus": 1,
    "memory_mb": 1024,
    "time_limit_minutes": 60,
}


@pytest.fixture
def evil_folding(mallory_tenant: Tenant, mallory: User, k8s_cluster: Cluster) -> Tenant:
    """A project slugged "folding" in mallory's organization too, funded on the cluster."""
    project = factories.ProjectFactory(
        organization=mallory_tenant.org, name="Folding too", slug="folding"
    )
    ProjectMember.objects.create(project=project, user=mallory, role=ProjectMember.Role.PI)
    allocation = factories.AllocationFactory(project=project, clusters=[k8s_cluster])
    ledger_credit(actor=None, allocation=allocation, amount=Decimal(100), key="evil-folding")
    ClusterAccount.objects.create(user=mallory, cluster=k8s_cluster, username="mallory", uid=1003)
    return Tenant(org=mallory_tenant.org, project=project)


def _forwarded(api, project: str) -> Job:
    response = api.post("/api/v1/jobs/", {**BODY, "project": project}, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.json()
    job = Job.objects.get(uuid=response.json()["id"])
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    return job


def test_projects_with_the_same_slug_in_two_organizations_get_different_namespaces(
    api_alice,
    api_mallory,
    tenant: Tenant,
    evil_folding: Tenant,
    k8s: FakeKubernetes,
    k8s_allocation: Allocation,
):
    assert tenant.project.slug == evil_folding.project.slug == "folding"

    ours = _forwarded(api_alice, str(tenant.project.uuid))
    theirs = _forwarded(api_mallory, str(evil_folding.project.uuid))

    assert (ours.state, theirs.state) == (Job.State.QUEUED, Job.State.QUEUED)
    our_namespace = ours.backend_id.split("/")[0]
    their_namespace = theirs.backend_id.split("/")[0]
    assert our_namespace == "gpuc-vision-lab-folding-07452c5c"
    assert their_namespace == "gpuc-evil-folding-e375bb03"
    assert set(k8s.namespaces) == {our_namespace, their_namespace}
    assert (our_namespace, f"gpuc-{ours.uuid}") in k8s.jobs
    assert (their_namespace, f"gpuc-{theirs.uuid}") in k8s.jobs
    labels = {
        namespace: job["metadata"]["labels"]["gpu-commons/project"]
        for (namespace, _), job in k8s.jobs.items()
    }
    assert labels == {our_namespace: "vision-lab.folding", their_namespace: "evil.folding"}


def test_forwarding_and_finalising_read_the_organization_in_the_same_query(
    api_alice, tenant: Tenant, k8s: FakeKubernetes, k8s_cluster: Cluster, k8s_allocation
):
    jobs = []
    for _ in range(3):
        response = api_alice.post(
            "/api/v1/jobs/", {**BODY, "project": str(tenant.project.uuid)}, format="json"
        )
        assert response.status_code == HTTPStatus.CREATED
        jobs.append(Job.objects.get(uuid=response.json()["id"]))

    with CaptureQueriesContext(connection) as forwarding:
        for job in jobs:
            job_forward(job_id=job.pk)
    k8s.advance(3600)
    with CaptureQueriesContext(connection) as syncing:
        cluster_sync(cluster=k8s_cluster)

    assert Job.objects.filter(state=Job.State.COMPLETED, finalized_at__isnull=False).count() == 3
    for query in [*forwarding.captured_queries, *syncing.captured_queries]:
        assert 'FROM "accounts_organization"' not in query["sql"]
