"""The navigation offers the staff areas by the same rules the views enforce (quotas.policy)."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.urls import reverse

from quotas.policy import FACILITY_ADMINS_GROUP, REVIEWERS_GROUP
from tests import factories


def _links(client, user) -> tuple[bool, bool]:
    """Whether the navigation on the dashboard links to (the review queue, the manage area)."""
    client.force_login(user)
    page = client.get("/").content.decode()
    review = f'href="{reverse("quotas:allocation_review_queue")}"'
    manage = f'href="{reverse("quotas:manage_home")}"'
    return review in page, manage in page


def test_a_plain_user_sees_neither_the_review_queue_nor_the_manage_area(client, bob):
    assert _links(client, bob) == (False, False)


def test_a_reviewer_sees_the_review_queue_and_a_facility_admin_the_manage_area(client, db):
    reviewer = factories.UserFactory(username="rita")
    reviewer.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    admin = factories.UserFactory(username="fred")
    admin.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])

    assert _links(client, reviewer) == (True, False)
    assert _links(client, admin) == (False, True)


def test_a_superuser_who_may_review_sees_the_review_queue(client, db):
    root = factories.UserFactory(username="root", is_superuser=True, is_staff=True)

    assert _links(client, root) == (True, True)
