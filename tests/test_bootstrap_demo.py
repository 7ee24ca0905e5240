"""`manage.py bootstrap_demo`: one JSON object, idempotent, separate tenants per username."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiToken, Membership, Organization, Project, ProjectMember, User
from jobs.models import ClusterAccount
from quotas.models import Allocation, Cluster, LedgerEntry, Rate

pytestmark = pytest.mark.django_db


def bootstrap(*args: str) -> dict:
    out = io.StringIO()
    call_command("bootstrap_demo", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def _me(token: str) -> object:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/me/")


def test_it_prints_one_json_object_with_everything_a_demo_needs():
    data = bootstrap("--backend", "simulated", "--su", "250")

    assert set(data) == {
        "username",
        "password",
        "token",
        "organization",
        "project",
        "cluster",
        "allocation",
    }
    user = User.objects.get(username=data["username"])
    org = Organization.objects.get(uuid=data["organization"]["uuid"])
    project = Project.objects.get(uuid=data["project"]["uuid"])
    cluster = Cluster.objects.get(uuid=data["cluster"]["uuid"])
    allocation = Allocation.objects.get(uuid=data["allocation"]["uuid"])
    assert Membership.objects.get(organization=org, user=user).role == "owner"
    assert ProjectMember.objects.get(project=project, user=user).role == "pi"
    assert (cluster.name, cluster.kind) == ("sim", "simulated")
    assert Rate.objects.filter(cluster=cluster).count() >= 3
    assert allocation.project == project
    assert allocation.kind == Allocation.Kind.GRANT
    assert list(allocation.clusters.all()) == [cluster]
    assert allocation.available == Decimal("250")
    assert data["allocation"]["available"] == "250.0000"
    assert ClusterAccount.objects.get(user=user, cluster=cluster).username == "demo"


def test_the_printed_credentials_work_for_the_web_and_the_api():
    data = bootstrap("--backend", "local")

    client = Client()
    signed_in = client.post(
        "/accounts/login/", {"login": data["username"], "password": data["password"]}
    )
    me = _me(data["token"])

    assert signed_in.status_code == HTTPStatus.FOUND
    assert signed_in["Location"] == "/"
    assert client.get("/").status_code == HTTPStatus.OK
    assert me.status_code == HTTPStatus.OK
    assert me.json()["projects"][0]["uuid"] == data["project"]["uuid"]


def test_running_twice_changes_nothing_and_the_token_still_works():
    first = bootstrap("--backend", "local")
    second = bootstrap("--backend", "local", "--su", "5000")

    assert second == first
    assert User.objects.filter(username="demo").count() == 1
    assert Organization.objects.count() == Project.objects.count() == 1
    assert Allocation.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="credit").count() == 1
    assert ApiToken.objects.filter(name="demo").count() == 1
    assert _me(first["token"]).status_code == HTTPStatus.OK
    assert Client().login(username="demo", password=first["password"])


def test_a_revoked_demo_token_is_replaced_by_a_working_one():
    first = bootstrap("--backend", "local")
    ApiToken.objects.filter(name="demo").update(revoked_at="2020-01-01T00:00:00Z")

    second = bootstrap("--backend", "local")

    assert second["token"] != first["token"]
    assert _me(second["token"]).status_code == HTTPStatus.OK
    assert _me(first["token"]).status_code == HTTPStatus.UNAUTHORIZED
    assert second["allocation"] == first["allocation"]


def test_different_usernames_get_separate_tenants():
    ann = bootstrap("--username", "ann", "--backend", "local")
    ben = bootstrap("--username", "ben", "--backend", "local")

    assert ann["organization"]["uuid"] != ben["organization"]["uuid"]
    assert ann["project"]["uuid"] != ben["project"]["uuid"]
    assert ann["allocation"]["uuid"] != ben["allocation"]["uuid"]
    assert ann["cluster"]["uuid"] == ben["cluster"]["uuid"]
    response = APIClient()
    response.credentials(HTTP_AUTHORIZATION=f"Bearer {ben['token']}")
    assert (
        response.get(f"/api/v1/projects/{ann['project']['uuid']}/").status_code
        == HTTPStatus.NOT_FOUND
    )


def test_the_slurm_cluster_reads_its_options_from_the_environment(monkeypatch):
    monkeypatch.setenv("SLURM_REST_URL", "http://127.0.0.1:6820")
    monkeypatch.setenv("SLURM_JWT_KEY_FILE", "/var/lib/gpucommons-slurm/jwt_hs256.key")
    monkeypatch.setenv("SLURM_SHARED_ROOT", "/var/lib/gpucommons-slurm/shared")
    monkeypatch.setenv("SLURM_PARTITION", "gpu")
    monkeypatch.setenv("SLURM_GPU_TYPES", "h100,a100")

    data = bootstrap("--backend", "slurm")

    cluster = Cluster.objects.get(uuid=data["cluster"]["uuid"])
    assert cluster.kind == "slurm"
    assert cluster.options == {
        "url": "http://127.0.0.1:6820",
        "jwt_key_file": "/var/lib/gpucommons-slurm/jwt_hs256.key",
        "shared_root": "/var/lib/gpucommons-slurm/shared",
        "partition": "gpu",
        "gpu_types": ["h100", "a100"],
        "max_gpus": 4,
        "max_cpus": 2,
        "max_memory_mb": 16000,
        "max_time_minutes": 1440,
    }
    user = User.objects.get(username="demo")
    assert ClusterAccount.objects.get(user=user, cluster=cluster).username == "gpuc-demo"
    assert set(
        Rate.objects.filter(cluster=cluster, resource="gpu_hour").values_list("gpu_type", flat=True)
    ) == {"", "h100", "a100"}


def test_existing_rates_on_the_cluster_are_left_alone():
    cluster = Cluster.objects.create(name="sim", kind="simulated", options={"gpus": 8})
    Rate.objects.create(cluster=cluster, resource="gpu_hour", su_per_unit=Decimal("7"))

    bootstrap("--backend", "simulated")

    assert list(Rate.objects.filter(cluster=cluster).values_list("su_per_unit", flat=True)) == [
        Decimal("7")
    ]


def test_without_json_it_prints_a_readable_summary():
    out = io.StringIO()

    call_command("bootstrap_demo", "--backend", "local", stdout=out)

    text = out.getvalue()
    assert "User:" in text and "API token:" in text and "SU available" in text
