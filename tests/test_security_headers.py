"""Content-Security-Policy and Permissions-Policy on every answer, and pages that need no inline
script or style (the policy refuses both): checked on the rendered pages and on every template."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from http import HTTPStatus
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import User
from jobs.models import ClusterAccount
from portal.security import csp_header, permissions_policy_header
from quotas.models import Allocation
from quotas.services import allocation_request_create
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}  # data, never executed


class InlineCode(HTMLParser):
    """Collects what a strict CSP would refuse: inline <script> and <style> elements, event
    handler and style attributes, htmx's hx-on (evaluated JS), javascript: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        executable = (names.get("type") or "").lower() not in DATA_SCRIPT_TYPES
        if tag == "script" and executable and not names.get("src") and "nonce" not in names:
            self.found.append(f"inline <script> {attrs}")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on") or name.startswith(("hx-on", "data-hx-on")):
                self.found.append(f"<{tag} {name}=...>")
            if name == "style":
                self.found.append(f"<{tag} style=...>")
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:...>")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def test_the_policies_are_formatted_as_the_headers_expect():
    assert csp_header({"default-src": ["'self'"], "img-src": ["'self'", "data:"]}) == (
        "default-src 'self'; img-src 'self' data:"
    )
    assert permissions_policy_header({"camera": [], "publickey-credentials-get": ["self"]}) == (
        "camera=(), publickey-credentials-get=(self)"
    )


def test_the_inline_code_finder_finds_what_the_policy_refuses():
    found = inline_code(
        '<script>alert(1)</script><button onclick="x()">b</button><p style="color:red">'
        '<style>p{}</style><a href="javascript:x()">a</a><div hx-on:click="x()"></div>'
        '<script type="application/json">{}</script><script src="/static/a.js"></script>'
    )

    assert len(found) == 6


def _assert_policies(response) -> None:
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "object-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "camera=()" in response["Permissions-Policy"]
    assert "geolocation=()" in response["Permissions-Policy"]


def test_html_pages_and_api_answers_carry_the_csp_and_permissions_policy(alice, tenant):
    token = account_services.api_token_create(actor=alice, name="cli")[1]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    answers = {
        "sign-in page": Client().get("/accounts/login/"),
        "redirect to sign-in": Client().get("/"),
        "API answer": api.get("/api/v1/me/"),
        "API error": APIClient().get("/api/v1/me/"),
        "API docs": Client().get("/api/docs/"),
        "404 page": Client().get("/no-such-page/"),
    }

    assert answers["API answer"].status_code == HTTPStatus.OK
    assert answers["API error"].status_code == HTTPStatus.UNAUTHORIZED
    for name, response in answers.items():
        assert "Content-Security-Policy" in response, name
        _assert_policies(response)


@pytest.fixture
def everything(alice: User, tenant, cluster, allocation: Allocation) -> dict[str, object]:
    """Alice as a superuser (reviewer, facility admin) with a job, a request and a new token."""
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    ClusterAccount.objects.create(user=alice, cluster=cluster, username="alice", uid=1001)
    job = factories.submitted_job(user=alice, project=tenant.project, cluster=cluster)
    today = timezone.localdate()
    request = allocation_request_create(
        actor=alice,
        project=tenant.project,
        title="More GPUs",
        amount="100",
        clusters=[cluster],
        start_date=today,
        end_date=today + timedelta(days=90),
        justification="science",
    )
    return {"job": job, "allocation": allocation, "request": request}


def _pages(tenant, everything) -> list[str]:
    return [
        "/",
        "/jobs/",
        "/jobs/new/",
        f"/jobs/{everything['job'].uuid}/",
        "/clusters/",
        "/allocations/",
        f"/allocations/{everything['allocation'].uuid}/",
        "/allocation-requests/",
        "/allocation-requests/new/",
        f"/allocation-requests/{everything['request'].uuid}/",
        "/review/",
        "/manage/",
        "/manage/usage/",
        "/manage/clusters/",
        "/projects/",
        f"/projects/{tenant.project.uuid}/",
        "/organizations/",
        f"/organizations/{tenant.org.uuid}/",
        "/billing/",
        "/settings/tokens/",
        "/accounts/email/",
        "/accounts/2fa/",
        "/api/docs/",
        "/django-admin/",
        "/django-admin/accounts/user/",
    ]


def test_no_page_needs_inline_script_or_style(alice, tenant, everything):
    client = signed_in(alice)
    new_token = client.post("/settings/tokens/", {"name": "cli", "scope": "read"}, follow=True)
    responses: dict[str, object] = {"/settings/tokens/ (new token)": new_token}
    for path in _pages(tenant, everything):
        responses[path] = client.get(path, follow=True)
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"):
        responses[f"{path} (signed out)"] = Client().get(path)
    responses["/invitations/ (signed out)"] = Client().get("/invitations/")

    for path, response in responses.items():
        assert response.status_code == HTTPStatus.OK, path
        assert inline_code(response.content.decode()) == [], path
        _assert_policies(response)


def test_the_api_docs_load_their_start_up_script_from_this_site():
    page = Client().get("/api/docs/")
    script_url = re.search(r'<script src="(/api/docs/\?[^"]*script=[^"]*)"', page.content.decode())
    assert script_url is not None

    script = Client().get(script_url.group(1).replace("&amp;", "&"))

    assert script.status_code == HTTPStatus.OK
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()
    assert '"validatorUrl": null' in script.content.decode()


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_no_template_has_inline_script_event_handlers_or_inline_style(template: Path):
    # Template tags are not HTML: drop comments, stand a placeholder in for the rest.
    source = re.sub(
        r"{% comment %}.*?{% endcomment %}|{#.*?#}", "", template.read_text(), flags=re.S
    )
    source = re.sub(r"{%.*?%}|{{.*?}}", "x", source, flags=re.S)

    assert inline_code(source) == []
