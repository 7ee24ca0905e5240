"""The OpenAPI schema generates without a warning, keeps DESIGN.md's stable paths, and the
Swagger UI is served from the vendored sidecar, not a CDN."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS

# DESIGN.md's "API contract (v1)": these names are stable.
STABLE_OPERATIONS = [
    ("get", "/api/v1/me/"),
    ("get", "/api/v1/organizations/"),
    ("post", "/api/v1/organizations/"),
    ("get", "/api/v1/projects/"),
    ("post", "/api/v1/projects/"),
    ("get", "/api/v1/projects/{uuid}/members/"),
    ("get", "/api/v1/projects/{uuid}/session-settings/"),
    ("put", "/api/v1/projects/{uuid}/session-settings/"),
    ("post", "/api/v1/projects/{uuid}/members/"),
    ("get", "/api/v1/clusters/"),
    ("post", "/api/v1/jobs/estimate/"),
    ("get", "/api/v1/jobs/"),
    ("post", "/api/v1/jobs/"),
    ("get", "/api/v1/jobs/{job_uuid}/"),
    ("post", "/api/v1/jobs/{job_uuid}/cancel/"),
    ("get", "/api/v1/jobs/{job_uuid}/log/"),
    ("get", "/api/v1/jobs/{job_uuid}/results/"),
    ("get", "/api/v1/jobs/{job_uuid}/results/{path}"),
    ("get", "/api/v1/allocations/"),
    ("get", "/api/v1/allocations/{uuid}/ledger/"),
    ("post", "/api/v1/allocation-requests/"),
    ("post", "/api/v1/allocation-requests/{uuid}/submit/"),
    ("post", "/api/v1/allocation-requests/{uuid}/approve/"),
    ("post", "/api/v1/allocation-requests/{uuid}/reject/"),
    ("post", "/api/v1/allocation-requests/{uuid}/request-changes/"),
    ("post", "/api/v1/billing/checkout/"),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The schema as `manage.py spectacular --validate --fail-on-warn` writes it; generating
    it raises on any warning or error, and on an invalid OpenAPI document."""
    path: Path = tmp_path_factory.mktemp("openapi") / "schema.yml"
    GENERATOR_STATS.reset()  # warnings seen earlier in this process would count otherwise
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def _response_schema(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    content = schema["paths"][path][method]["responses"]["200"]["content"]
    ref = content["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def test_the_schema_generates_and_validates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "GPU Commons API"


@pytest.mark.parametrize(("method", "path"), STABLE_OPERATIONS)
def test_every_stable_design_endpoint_is_in_the_schema(schema, method, path):
    assert path in schema["paths"]
    assert method in schema["paths"][path]


def test_operation_ids_are_unique(schema):
    ids = [
        operation["operationId"]
        for item in schema["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert len(ids) == len(set(ids))


def test_the_log_estimate_and_results_endpoints_describe_their_real_shapes(schema):
    log = _response_schema(schema, "get", "/api/v1/jobs/{job_uuid}/log/")
    assert set(log["properties"]) == {"data", "next_offset", "eof"}
    estimate = _response_schema(schema, "post", "/api/v1/jobs/estimate/")
    assert set(estimate["properties"]) == {"estimated_cost", "breakdown"}
    assert estimate["properties"]["breakdown"]["type"] == "array"
    results = _response_schema(schema, "get", "/api/v1/jobs/{job_uuid}/results/")
    assert results["properties"]["results"]["type"] == "array"
    download = schema["paths"]["/api/v1/jobs/{job_uuid}/results/{path}"]["get"]["responses"]
    assert download["200"]["content"]["application/octet-stream"]["schema"] == {
        "type": "string",
        "format": "binary",
    }


def test_project_storage_documents_its_streamed_upload_download_and_413(schema):
    base = "/api/v1/projects/{uuid}/files/"
    for action in ("", "download/", "upload/", "mkdir/", "rename/", "delete/", "copy-results/"):
        assert base + action in schema["paths"]
    upload = schema["paths"][base + "upload/"]["post"]
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    part = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert part["properties"]["file"] == {"type": "string", "format": "binary"}
    assert "413" in upload["responses"]
    download = schema["paths"][base + "download/"]["get"]["responses"]["200"]
    assert download["content"]["application/octet-stream"]["schema"]["format"] == "binary"


def test_state_and_kind_enums_are_named_after_their_models(schema):
    # A collision would have been a warning (failing the fixture) and a hashed name.
    names = set(schema["components"]["schemas"])
    assert {
        "JobStateEnum",
        "AllocationRequestStateEnum",
        "AllocationRequestKindEnum",
        "AllocationKindEnum",
        "ClusterKindEnum",
        "OrganizationKindEnum",
    } <= names
    job = schema["components"]["schemas"]["JobStateEnum"]
    assert set(job["enum"]) >= {"pending", "queued", "running", "completed", "cancelled"}


def test_swagger_ui_is_served_from_the_vendored_sidecar_without_a_cdn(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode().lower()
    for host in ("cdn", "jsdelivr", "unpkg"):
        assert host not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    # The start-up script is a file of its own (no inline script under the CSP).
    script = client.get("/api/docs/?script=")
    assert script.status_code == HTTPStatus.OK
    assert 'url: "/api/schema/"' in script.content.decode()


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/v1/") and isinstance(operation, dict):
                yield method, path, operation


def _error_ref(operation: dict[str, Any], status: str) -> str:
    return operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]


def test_every_operation_documents_its_error_answers_in_the_one_error_shape(schema):
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"detail", "code"}
    operations = list(_operations(schema))
    assert len(operations) > 40
    for method, path, operation in operations:
        statuses = {"400", "401", "403", "429"} | ({"404"} if "{" in path else set())
        for status in statuses:
            assert _error_ref(operation, status) == "#/components/schemas/Error", (method, path)


def test_submitting_documents_the_quota_and_conflict_answers(schema):
    for path in ("/api/v1/jobs/", "/api/v1/jobs/batch/"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"402", "409"} <= set(responses)
        assert _error_ref(schema["paths"][path]["post"], "402") == "#/components/schemas/Error"
    submit = schema["paths"]["/api/v1/allocation-requests/{uuid}/submit/"]["post"]
    assert "409" in submit["responses"]


@pytest.mark.parametrize(
    ("path", "paginated"),
    [
        ("/api/v1/jobs/", True),
        ("/api/v1/allocation-requests/", True),
        ("/api/v1/allocations/{uuid}/ledger/", True),
        ("/api/v1/projects/", True),
        ("/api/v1/clusters/", False),
        ("/api/v1/allocations/", False),
        ("/api/v1/job-templates/", False),
    ],
)
def test_list_operations_document_their_page_envelope_not_a_bare_array(schema, path, paginated):
    page = _response_schema(schema, "get", path)
    assert page["type"] == "object"
    assert page["required"] == ["results"]
    assert page["properties"]["results"]["type"] == "array"
    assert ("next" in page["properties"]) is paginated


def test_a_blank_billing_email_is_null_as_the_schema_says(schema, api_alice, tenant):
    field = schema["components"]["schemas"]["Organization"]["properties"]["billing_email"]
    assert field["format"] == "email"
    assert field["nullable"] is True
    tenant.org.billing_email = ""
    tenant.org.save()

    response = api_alice.get("/api/v1/organizations/")

    assert response.status_code == HTTPStatus.OK
    [org] = response.json()["results"]
    assert org["billing_email"] is None
