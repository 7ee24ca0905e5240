from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

from quotas.services import ledger_hold, ledger_settle
from tests import factories

BASE = "/api/v1/allocations/"


def test_allocations_list_balances_as_decimal_strings(api_alice, allocation, tenant, cluster):
    hold = ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=30, key="j1")
    ledger_settle(actor=None, hold=hold, actual=Decimal("12.5"))
    ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=20, key="j2")

    response = api_alice.get(f"{BASE}?project={tenant.project.uuid}")

    assert response.status_code == HTTPStatus.OK
    [row] = response.json()["results"]
    assert row["id"] == str(allocation.uuid)
    assert (row["credited"], row["held"], row["charged"], row["available"]) == (
        "1000.0000",
        "20.0000",
        "12.5000",
        "967.5000",
    )
    assert (row["status"], row["kind"], row["clusters"]) == ("active", "grant", ["sim"])
    assert row["project"] == str(tenant.project.uuid)
    assert {"starts_at", "ends_at", "status_reason"} <= set(row)


def test_a_project_member_sees_the_allocation_and_its_ledger(api_bob, allocation):
    assert api_bob.get(f"{BASE}{allocation.uuid}/").status_code == HTTPStatus.OK
    ledger = api_bob.get(f"{BASE}{allocation.uuid}/ledger/")
    assert ledger.status_code == HTTPStatus.OK
    assert [(e["kind"], e["amount"]) for e in ledger.json()["results"]] == [("credit", "1000.0000")]


def test_the_ledger_is_cursor_paginated_newest_first(api_alice, allocation, tenant, cluster):
    for i in range(5):
        ledger_hold(actor=None, project=tenant.project, cluster=cluster, amount=i + 1, key=f"j{i}")

    first = api_alice.get(f"{BASE}{allocation.uuid}/ledger/?page_size=4").json()
    second = api_alice.get(first["next"]).json()

    amounts = [e["amount"] for e in first["results"] + second["results"]]
    assert amounts == ["5.0000", "4.0000", "3.0000", "2.0000", "1.0000", "1000.0000"]
    assert first["results"][0]["cluster"] == "sim"
    assert second["next"] is None


def test_mallory_gets_404_on_every_allocation_endpoint(api_mallory, allocation, tenant):
    assert api_mallory.get(f"{BASE}{allocation.uuid}/").status_code == HTTPStatus.NOT_FOUND
    assert api_mallory.get(f"{BASE}{allocation.uuid}/ledger/").status_code == 404
    assert api_mallory.get(f"{BASE}?project={tenant.project.uuid}").status_code == 404
    assert api_mallory.get(BASE).json()["results"] == []
    assert api_mallory.get(f"{BASE}not-a-uuid/").status_code == HTTPStatus.NOT_FOUND


def test_clusters_list_rates_and_only_public_options(api_alice, cluster):
    cluster.options = {
        "gpu_types": ["h100", "a100"],
        "partitions": ["gpu"],
        "max_gpus_per_job": 8,
        "url": "https://user:secret@slurm.example:6820",
        "token_env": "SLURM_JWT",
        "key_file": "/etc/slurm/jwt.key",
    }
    cluster.save()
    factories.ClusterFactory(name="off", enabled=False)

    response = api_alice.get("/api/v1/clusters/")

    assert response.status_code == HTTPStatus.OK
    [row] = response.json()["results"]
    assert row["name"] == "sim"
    assert row["gpu_types"] == ["h100", "a100"]
    assert row["options"] == {
        "gpu_types": ["h100", "a100"],
        "partitions": ["gpu"],
        "max_gpus_per_job": 8,
    }
    assert "secret" not in response.content.decode()
    rates = {(r["resource"], r["gpu_type"]): r["su_per_unit"] for r in row["rates"]}
    assert rates[("gpu_hour", "h100")] == "2.000000"
    assert rates[("cpu_hour", "")] == "0.100000"


def test_clusters_reserved_for_other_organizations_are_not_listed(
    api_alice, api_mallory, mallory_tenant, cluster
):
    factories.ClusterFactory(name="evil-only", options={"allowed_organizations": ["evil"]})

    mine = [c["name"] for c in api_alice.get("/api/v1/clusters/").json()["results"]]
    theirs = [c["name"] for c in api_mallory.get("/api/v1/clusters/").json()["results"]]

    assert mine == ["sim"]
    assert theirs == ["evil-only", "sim"]
