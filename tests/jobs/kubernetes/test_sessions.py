"""Interactive sessions on Kubernetes, against the local API server: the app runs as the Job's
pod, a ClusterIP Service selects that pod on the session port, the portal learns where it
listens (the Service's cluster DNS name) and the app's secret (a Secret the backend made),
and the Service and Secret go when the session ends or is cancelled."""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from typing import Any

import pytest
from django.test import Client

from jobs.backends.base import JobRef
from jobs.backends.kubernetes import KubernetesBackend
from jobs.models import Job, Session, SessionApp
from jobs.services import cluster_sync, job_forward
from jobs.services.sessions import session_locate
from jobs.services.specs import SPEC_RELATED, job_ref, job_spec
from quotas.models import Allocation, Cluster
from tests.jobs.session_apps import jupyterlab_app  # noqa: F401 (autouse)
from tests.k8s_server import FakeKubernetes

NAMESPACE = "gpuc-vision-lab-folding-07452c5c"
SECRET = "proxy-secret-for-tests"
UUID_LABEL = "gpu-commons/job-uuid"
MANAGED = {"app.kubernetes.io/managed-by": "gpu-commons"}


@pytest.fixture
def notebook(db: None) -> SessionApp:
    """An app on a fixed port whose command the fake kubelet runs for an hour."""
    return SessionApp.objects.create(
        slug="notebook", name="Notebook", command="sleep 3600", port=9000
    )


@pytest.fixture
def body(k8s_allocation: Allocation, tenant: Any) -> dict[str, Any]:
    return {
        "app": "notebook",
        "project": str(tenant.project.uuid),
        "cluster": "kube",
        "cpus": 1,
        "memory_mb": 1024,
        "time_limit_minutes": 60,
    }


def _start(api: Any, body: dict[str, Any]) -> Job:
    response = api.post("/api/v1/sessions/", body, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.json()
    job = Job.objects.get(uuid=response.json()["id"])
    job_forward(job_id=job.pk)
    job.refresh_from_db()
    return job


def _secret_token(k8s: FakeKubernetes, job: Job) -> str:
    secret = k8s.secrets[(NAMESPACE, f"gpuc-{job.uuid}-session")]
    return base64.b64decode(secret["data"]["token"]).decode()


def test_a_session_runs_as_a_pod_with_a_service_selecting_it_on_the_session_port(
    api_alice, body, notebook, k8s: FakeKubernetes, k8s_cluster: Cluster
):
    job = _start(api_alice, body)

    assert job.backend_id == f"{NAMESPACE}/gpuc-{job.uuid}"
    kube_job = k8s.jobs[(NAMESPACE, f"gpuc-{job.uuid}")]
    assert kube_job["metadata"]["labels"]["gpu-commons/session"] == "true"
    template = kube_job["spec"]["template"]
    assert template["metadata"]["labels"][UUID_LABEL] == str(job.uuid)
    container = template["spec"]["containers"][0]
    assert container["command"][0] == "/bin/bash"  # the wrapper is bash
    assert container["ports"] == [{"name": "session", "containerPort": 9000, "protocol": "TCP"}]
    env = {item["name"]: item for item in container["env"]}
    assert env["GPUC_SESSION_FIXED_PORT"]["value"] == "9000"
    assert env["GPUC_SESSION_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": f"gpuc-{job.uuid}-session", "key": "token"}
    }
    assert "GPUC_SESSION_PORT" not in env  # the portal's marker is not passed as such
    # The secret is nowhere in the Job or its script.
    token = _secret_token(k8s, job)
    assert len(token) == 64
    assert token not in json.dumps(kube_job)
    assert token not in json.dumps(k8s.configmaps[(NAMESPACE, f"gpuc-{job.uuid}-script")])

    service = k8s.services[(NAMESPACE, f"gpuc-{job.uuid}")]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {**MANAGED, UUID_LABEL: str(job.uuid)}
    assert service["spec"]["ports"] == [
        {"name": "session", "protocol": "TCP", "port": 9000, "targetPort": 9000}
    ]
    assert service["metadata"]["labels"][UUID_LABEL] == str(job.uuid)
    owner = service["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Job", kube_job["metadata"]["uid"])
    # The selector finds exactly the session's pod.
    pods = [
        p
        for p in k8s.pods.values()
        if all(p["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    ]
    assert [p["metadata"]["labels"][UUID_LABEL] for p in pods] == [str(job.uuid)]


def test_a_running_session_reports_the_services_cluster_ip_and_the_secret_to_the_proxy_only(
    api_alice, body, notebook, k8s: FakeKubernetes, k8s_cluster: Cluster, alice, settings
):
    settings.SESSIONS_PROXY_SECRET = SECRET
    job = _start(api_alice, body)
    k8s.advance(10)
    cluster_sync(cluster=k8s_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING

    session = session_locate(session=Session.objects.select_related("job").get(job=job))

    cluster_ip = k8s.services[(NAMESPACE, f"gpuc-{job.uuid}")]["spec"]["clusterIP"]
    assert cluster_ip.startswith("10.96.")
    # An address, not a name: nginx proxies to it without a resolver.
    assert (session.host, session.port) == (cluster_ip, 9000)
    assert session.token == _secret_token(k8s, job)
    owner = Client()
    owner.force_login(alice)
    auth = owner.get(
        "/sessions-auth/",
        headers={
            "X-Original-URI": f"/sessions/{job.uuid}/api/status",
            "X-Session-Proxy-Secret": SECRET,
        },
    )
    assert auth.status_code == HTTPStatus.OK
    assert auth["X-Session-Upstream"] == f"{cluster_ip}:9000"
    answer = api_alice.get(f"/api/v1/sessions/{job.uuid}/")
    assert answer.status_code == HTTPStatus.OK
    assert session.token not in answer.content.decode()


def test_an_app_that_picks_its_port_listens_on_8888_in_its_own_pod(
    api_alice, body, k8s: FakeKubernetes, k8s_cluster: Cluster
):
    job = _start(api_alice, {**body, "app": "jupyterlab"})

    service = k8s.services[(NAMESPACE, f"gpuc-{job.uuid}")]
    assert [p["port"] for p in service["spec"]["ports"]] == [8888]


def test_a_submission_retried_after_a_lost_answer_finds_the_same_job_service_and_secret(
    api_alice, body, notebook, k8s: FakeKubernetes, kube_backend: KubernetesBackend
):
    job = _start(api_alice, body)
    token = _secret_token(k8s, job)
    job = Job.objects.select_related("cluster", "project__organization").get(pk=job.pk)

    again = kube_backend.submit(job_spec(job))

    assert again == job.backend_id
    assert len(k8s.services) == 1 and len(k8s.secrets) == 1
    assert _secret_token(k8s, job) == token  # the first secret is kept
    assert len(k8s.calls("POST", f"/api/v1/namespaces/{NAMESPACE}/services")) == 2


def test_a_service_of_the_same_name_owned_by_another_job_is_refused(
    api_alice, body, notebook, k8s: FakeKubernetes, kube_backend: KubernetesBackend
):
    job = _start(api_alice, body)
    k8s.services[(NAMESPACE, f"gpuc-{job.uuid}")]["metadata"]["labels"][UUID_LABEL] = "other"
    ref = job_ref(Job.objects.select_related("project__organization").get(pk=job.pk))

    with pytest.raises(Exception, match="belongs to 'other'"):
        kube_backend.read_session_file(ref)


def test_the_location_is_not_known_while_the_service_is_missing(
    api_alice, body, notebook, k8s: FakeKubernetes, kube_backend: KubernetesBackend
):
    job = _start(api_alice, body)
    k8s.services.clear()
    ref = JobRef(uuid=job.uuid, backend_id=job.backend_id, cluster_user="alice")

    with pytest.raises(FileNotFoundError):
        kube_backend.read_session_file(ref)


def test_cancelling_a_session_deletes_its_service_and_secret(
    api_alice, body, notebook, k8s: FakeKubernetes, k8s_cluster: Cluster
):
    job = _start(api_alice, body)
    k8s.advance(10)
    cluster_sync(cluster=k8s_cluster)

    response = api_alice.post(f"/api/v1/jobs/{job.uuid}/cancel/")

    assert response.status_code in (HTTPStatus.OK, HTTPStatus.ACCEPTED)
    assert k8s.services == {} and k8s.secrets == {}
    assert k8s.calls("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/gpuc-{job.uuid}")
    cluster_sync(cluster=k8s_cluster)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED


def test_a_session_that_ends_by_itself_has_its_service_and_secret_deleted_by_the_sync(
    api_alice, body, notebook, k8s: FakeKubernetes, k8s_cluster: Cluster
):
    SessionApp.objects.filter(pk=notebook.pk).update(command="sleep 60")
    job = _start(api_alice, body)
    k8s.advance(10)
    cluster_sync(cluster=k8s_cluster)
    assert (NAMESPACE, f"gpuc-{job.uuid}") in k8s.services

    k8s.advance(120)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    assert k8s.services == {} and k8s.secrets == {}


def _submit_batch_job(api: Any) -> Job:
    """A plain batch job on the Kubernetes cluster, submitted and not yet forwarded."""
    response = api.post(
        "/api/v1/jobs/",
        {
            "project": "folding",
            "cluster": "kube",
            "name": "train",
            "script": "sleep 60",
            "time_limit_minutes": 60,
        },
        format="json",
    )
    assert response.status_code == HTTPStatus.CREATED, response.json()
    return Job.objects.get(uuid=response.json()["id"])


def test_a_batch_job_gets_no_service_and_no_secret(
    api_alice, k8s_allocation, tenant, k8s: FakeKubernetes, k8s_cluster: Cluster
):
    job = _submit_batch_job(api_alice)
    job_forward(job_id=job.pk)
    k8s.advance(120)
    cluster_sync(cluster=k8s_cluster)

    job.refresh_from_db()
    assert job.state == Job.State.COMPLETED
    assert k8s.services == {} and k8s.secrets == {}
    assert not k8s.calls(path=rf"/api/v1/namespaces/{NAMESPACE}/(services|secrets).*")


def test_a_session_is_known_by_its_kind_and_app_and_its_env_stays_empty(
    api_alice, body, notebook, k8s: FakeKubernetes, django_assert_num_queries
):
    job = _start(api_alice, body)
    stored = Job.objects.select_related(*SPEC_RELATED).get(pk=job.pk)

    with django_assert_num_queries(0):
        spec = job_spec(stored)

    assert job.env == {}
    assert (spec.session_port, dict(spec.env)) == (9000, {})


def test_a_batch_job_stored_with_the_old_session_marker_in_its_env_runs_as_a_batch_job(
    api_alice, k8s_allocation, tenant, k8s: FakeKubernetes, k8s_cluster: Cluster
):
    job = _submit_batch_job(api_alice)
    # As a job submitted before GPUC_* names were refused could have been stored.
    Job.objects.filter(pk=job.pk).update(env={"GPUC_SESSION_PORT": "9000"})

    job_forward(job_id=job.pk)

    kube_job = k8s.jobs[(NAMESPACE, f"gpuc-{job.uuid}")]
    assert "gpu-commons/session" not in kube_job["metadata"]["labels"]
    container = kube_job["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in container
    assert "GPUC_SESSION_PORT" not in {item["name"] for item in container["env"]}
    assert k8s.services == {} and k8s.secrets == {}


def test_mallory_cannot_see_a_kubernetes_session(
    api_alice, api_mallory, mallory_tenant, body, notebook, k8s: FakeKubernetes, mallory
):
    job = _start(api_alice, body)

    assert api_mallory.get(f"/api/v1/sessions/{job.uuid}/").status_code == HTTPStatus.NOT_FOUND
    outsider = Client()
    outsider.force_login(mallory)
    assert outsider.get(f"/sessions/{job.uuid}/").status_code == HTTPStatus.NOT_FOUND


def test_the_local_api_server_lists_services_by_label_and_refuses_a_service_without_ports(
    api_alice, body, notebook, k8s: FakeKubernetes, kubectl: Any
):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    job = _start(api_alice, body)
    core = client.CoreV1Api(kubectl)

    selector = f"{UUID_LABEL}={job.uuid}"
    listed = core.list_namespaced_service(NAMESPACE, label_selector=selector).to_dict()
    assert [s["metadata"]["name"] for s in listed["items"]] == [f"gpuc-{job.uuid}"]
    assert str(listed["items"][0]["spec"]["cluster_ip"]).startswith("10.96.")
    assert core.list_service_for_all_namespaces(label_selector=f"{UUID_LABEL}=other").items == []
    secrets = core.list_namespaced_secret(NAMESPACE, label_selector=selector).to_dict()
    assert [s["metadata"]["name"] for s in secrets["items"]] == [f"gpuc-{job.uuid}-session"]

    with pytest.raises(ApiException) as refused:
        core.create_namespaced_service(
            NAMESPACE, client.V1Service(metadata=client.V1ObjectMeta(name="bare"))
        )
    assert refused.value.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "spec.ports" in json.loads(str(refused.value.body))["message"]
    with pytest.raises(ApiException) as missing:
        core.delete_namespaced_service("bare", NAMESPACE)
    assert missing.value.status == HTTPStatus.NOT_FOUND
