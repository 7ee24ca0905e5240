"""`manage.py staff_role` makes reviewers and facility admins (documented in the README);
superusers see the Review link; "reviewers have been notified" only when some were; and a
suspended tenant sees the reason on their dashboard."""

from __future__ import annotations

from http import HTTPStatus
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.core.management import CommandError, call_command

from quotas.policy import is_facility_admin, is_reviewer
from quotas.services import allocation_suspend
from tests import factories
from tests.quotas.conftest import draft_request

README = Path(__file__).resolve().parents[2] / "README.md"


def _run(*args: str) -> str:
    out = StringIO()
    call_command("staff_role", *args, stdout=out)
    return out.getvalue().strip()


def test_the_command_makes_a_reviewer_by_email_and_a_facility_admin_by_username(alice, bob):
    assert _run("alice@uni.example", "reviewer") == "alice: reviewer"
    assert _run("bob", "facility-admin", "reviewer") == "bob: reviewer, facility-admin"
    assert _run("bob", "facility-admin") == "bob: reviewer, facility-admin"  # idempotent

    assert is_reviewer(alice) and not is_facility_admin(alice)
    assert is_reviewer(bob) and is_facility_admin(bob)


def test_the_command_takes_roles_back_and_prints_them_without_a_role(bob):
    _run("bob", "facility-admin", "reviewer")

    assert _run("bob", "reviewer", "--remove") == "bob: facility-admin"
    assert _run("bob") == "bob: facility-admin"
    assert not is_reviewer(bob)


def test_an_unknown_user_or_role_is_an_error_naming_it_and_changes_nothing(alice):
    with pytest.raises(CommandError, match="No user with username or email 'nobody'"):
        _run("nobody", "reviewer")
    with pytest.raises(CommandError, match="Unknown role 'admin': choose from reviewer"):
        _run("alice", "reviewer", "admin")

    assert not is_reviewer(alice)
    assert alice.groups.count() == 0


def test_the_command_is_documented_in_the_readme():
    readme = README.read_text()
    assert "python manage.py staff_role carol@uni.example reviewer" in readme
    assert "facility-admin" in readme


def test_a_superuser_sees_the_review_and_manage_links(web, db):
    root = factories.UserFactory(username="root", is_superuser=True)

    html = web(root).get("/").content.decode()

    assert 'href="/review/"' in html
    assert 'href="/manage/"' in html


def test_a_reviewer_made_by_the_command_sees_the_review_link_and_others_do_not(web, alice, bob):
    _run("alice", "reviewer")

    assert 'href="/review/"' in web(alice).get("/").content.decode()
    assert 'href="/review/"' not in web(bob).get("/").content.decode()


def _flash(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_submitting_says_reviewers_were_notified_only_when_one_was_emailed(
    web, alice, tenant, cluster, django_capture_on_commit_callbacks
):
    first = draft_request(tenant.project, cluster, alice)
    client = web(alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/allocation-requests/{first.uuid}/submit/", follow=True)

    assert response.status_code == HTTPStatus.OK
    [message] = _flash(response)
    assert "notified" not in message.replace("No reviewer", "")
    assert message.startswith("Request submitted. No reviewer could be emailed")
    assert [m.to for m in mail.outbox] == [[alice.email]]

    reviewer = factories.UserFactory(username="rita", email="rita@facility.example")
    _run("rita", "reviewer")
    second = draft_request(tenant.project, cluster, alice, title="Second")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/allocation-requests/{second.uuid}/submit/", follow=True)

    assert _flash(response) == ["Request submitted: 1 reviewer has been notified."]
    assert reviewer.email in [m.to[0] for m in mail.outbox]


def test_a_suspended_tenant_sees_the_reason_on_the_dashboard(web, alice, dave, mallory, allocation):
    allocation_suspend(
        actor=dave, allocation=allocation, reason="Unpaid invoice INV-42: contact billing"
    )

    html = web(alice).get("/").content.decode()

    assert 'id="suspended"' in html
    assert "Unpaid invoice INV-42: contact billing" in html
    assert f'href="/allocations/{allocation.uuid}/"' in html
    assert "INV-42" not in web(mallory).get("/").content.decode()
    assert "INV-42" not in web(dave).get("/").content.decode()  # staff: only their own


def test_a_resumed_allocation_no_longer_shows_the_notice(web, alice, dave, allocation):
    from quotas.services import allocation_resume

    allocation_suspend(actor=dave, allocation=allocation, reason="Audit")
    allocation_resume(actor=dave, allocation=allocation)

    assert 'id="suspended"' not in web(alice).get("/").content.decode()
