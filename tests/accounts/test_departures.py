"""accounts.departures: apps above accounts hear of members who left, after the commit."""

from __future__ import annotations

import pytest

from accounts.departures import register_departure_callback, unregister_departure_callback
from accounts.models import Membership, ProjectMember
from accounts.services import membership_remove, project_member_remove


@pytest.fixture
def departed():
    seen: list[int] = []
    register_departure_callback(seen.append)
    yield seen
    unregister_departure_callback(seen.append)


def test_removing_a_project_member_tells_the_callbacks_after_the_commit(
    alice, bob, tenant, departed, django_capture_on_commit_callbacks
):
    member = ProjectMember.objects.get(project=tenant.project, user=bob)

    with django_capture_on_commit_callbacks() as callbacks:
        project_member_remove(actor=alice, member=member)
        assert departed == []  # nothing before the commit

    for callback in callbacks:
        callback()
    assert departed == [bob.pk]


def test_removing_an_organization_member_tells_the_callbacks(
    alice, bob, tenant, departed, django_capture_on_commit_callbacks
):
    membership = Membership.objects.get(organization=tenant.org, user=bob)

    with django_capture_on_commit_callbacks(execute=True):
        membership_remove(actor=alice, membership=membership)

    assert departed == [bob.pk]
    assert not ProjectMember.objects.filter(user=bob).exists()


def test_a_failing_callback_does_not_undo_the_removal_or_stop_the_others(
    alice, bob, tenant, departed, django_capture_on_commit_callbacks
):
    def broken(user_id: int) -> None:
        raise RuntimeError("down")

    register_departure_callback(broken)
    try:
        member = ProjectMember.objects.get(project=tenant.project, user=bob)
        with django_capture_on_commit_callbacks(execute=True):
            project_member_remove(actor=alice, member=member)
    finally:
        unregister_departure_callback(broken)

    assert departed == [bob.pk]
    assert not ProjectMember.objects.filter(project=tenant.project, user=bob).exists()
