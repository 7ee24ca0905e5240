"""portal.sql.PreparedValues: statements compiled once answer what the querysets answer, and a
queryset whose SQL depends on the values themselves is refused."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Project, User
from portal.sql import PreparedValues

pytestmark = pytest.mark.django_db


def test_rows_are_those_of_the_queryset_for_each_caller(alice, bob, tenant, mallory_tenant):
    prepared = PreparedValues(
        lambda user_id: (
            Project.objects.filter(memberships__user_id=user_id)
            .order_by("name")
            .values("uuid", "name", "created_at")
        )
    )
    for user in (alice, bob, mallory_tenant.project.memberships.get().user):
        expected = list(
            Project.objects.filter(memberships__user=user)
            .order_by("name")
            .values("uuid", "name", "created_at")
        )
        assert prepared.rows({"user_id": user.pk}) == expected


def test_a_list_s_length_is_part_of_the_shape_and_an_empty_one_reads_nothing(
    tenant, mallory_tenant
):
    prepared = PreparedValues(
        lambda ids: Project.objects.filter(pk__in=ids).order_by("pk").values("slug")
    )
    both = [tenant.project.pk, mallory_tenant.project.pk]

    expected = list(Project.objects.filter(pk__in=both).order_by("pk").values("slug"))
    assert prepared.rows({"ids": both}) == expected
    assert len(expected) == 2
    assert prepared.rows({"ids": both[:1]}) == [{"slug": tenant.project.slug}]
    with CaptureQueriesContext(connection) as queries:
        assert prepared.rows({"ids": []}) == []
    assert len(queries.captured_queries) == 0


def test_a_queryset_whose_sql_depends_on_the_value_is_refused(alice):
    # Built with an odd stand-in, then an even one: two statements.
    prepared = PreparedValues(
        lambda user_id: (
            User.objects.filter(pk=user_id).values("pk")
            if user_id % 2
            else User.objects.filter(pk=user_id, is_active=True).values("pk")
        )
    )

    with pytest.raises(ValueError, match="cannot be prepared"):
        prepared.rows({"user_id": alice.pk})


def test_a_parameter_the_statement_does_not_use_is_refused(alice):
    prepared = PreparedValues(lambda user_id: User.objects.filter(is_active=True).values("pk"))

    with pytest.raises(ValueError, match="cannot be prepared"):
        prepared.rows({"user_id": alice.pk})
