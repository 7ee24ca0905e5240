"""bulk_set / bulk_insert: the PostgreSQL statements and the portable fallback (what SQLite,
the `make run` default, uses) write the same rows, foreign keys named either way."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Job, JobEvent
from quotas.services import batch
from quotas.services.batch import bulk_insert, bulk_set


@pytest.fixture(params=["postgresql", "portable"])
def writers(request, monkeypatch):
    """bulk_set and bulk_insert as PostgreSQL runs them, or through the fallback."""
    if request.param == "portable":
        monkeypatch.setattr(batch.connection, "vendor", "sqlite")
    return bulk_set, bulk_insert


@pytest.mark.parametrize("job_field", ["job", "job_id"])
def test_events_and_job_fields_are_written_with_a_foreign_key_named_either_way(
    writers, job_field, submit, sim_cluster
):
    set_rows, insert_rows = writers
    first, second = submit(sim_cluster, name="a"), submit(sim_cluster, name="b")
    now = timezone.now()

    insert_rows(
        JobEvent,
        (job_field, "from_state", "to_state", "message", "created_at"),
        [
            (first.pk, "pending", "queued", "one", now),
            (second.pk, "pending", "queued", "two", now),
        ],
    )
    set_rows(
        Job,
        ("state", "backend_id", "hold_id" if job_field == "job_id" else "hold"),
        [(first.pk, "queued", "11", None), (second.pk, "queued", "12", second.hold_id)],
    )

    assert set(
        JobEvent.objects.filter(message__in=["one", "two"]).values_list("job", "message")
    ) == {
        (first.pk, "one"),
        (second.pk, "two"),
    }
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.backend_id, first.hold_id) == ("queued", "11", None)
    assert (second.state, second.backend_id) == ("queued", "12")
    assert second.hold_id is not None


def test_text_with_quotes_backslashes_braces_and_nulls_and_shared_constants_arrive_unchanged(
    writers, submit, sim_cluster
):
    set_rows, insert_rows = writers
    job = submit(sim_cluster, name="a")
    now = timezone.now()
    texts = ['say "hi"', "C:\\path\\", "{a,b}", "NULL", "", "ünïcødé, 'quoted'", " spaced "]

    insert_rows(
        JobEvent,
        ("job_id", "message"),
        [(job.pk, text) for text in texts],
        constants={"from_state": "running", "to_state": "completed", "created_at": now},
    )
    set_rows(
        Job,
        ("state_reason", "exit_code", "usage"),
        [(job.pk, texts[0] + texts[1], None, {"note": texts[2], "cost": "1.5000"})],
        constants={"finalized_at": now, "charged_cost": Decimal("1.5000")},
    )

    events = JobEvent.objects.filter(job=job, to_state="completed")
    assert sorted(events.values_list("message", flat=True)) == sorted(texts)
    assert set(events.values_list("from_state", "created_at")) == {("running", now)}
    job.refresh_from_db()
    assert job.state_reason == 'say "hi"C:\\path\\'
    assert job.exit_code is None
    assert job.usage == {"note": "{a,b}", "cost": "1.5000"}
    assert (job.finalized_at, job.charged_cost) == (now, Decimal("1.5000"))


def test_pk_any_finds_what_pk_in_finds_with_one_array_parameter(submit, sim_cluster):
    jobs = [submit(sim_cluster, name=f"j{i}") for i in range(3)]
    wanted = [jobs[0].pk, jobs[2].pk, 10**9]  # one id no row has
    with CaptureQueriesContext(connection) as queries:
        found = sorted(Job.objects.filter(pk__any=wanted).values_list("pk", flat=True))
        many = Job.objects.filter(pk__any=list(range(1, 5001))).count()
    assert found == sorted(Job.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    assert found == [jobs[0].pk, jobs[2].pk]
    assert many == len([j for j in jobs if j.pk <= 5000])
    # 5,000 ids are one parameter, not 5,000 placeholders
    assert all(" = ANY(" in q["sql"] and " IN (" not in q["sql"] for q in queries.captured_queries)


def test_pk_any_of_nothing_matches_nothing_without_a_query(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert list(Job.objects.filter(pk__any=[])) == []


def test_pk_any_off_postgresql_is_a_plain_in(submit, sim_cluster):
    job = submit(sim_cluster)
    query = Job.objects.filter(pk__any=[job.pk, 7]).query
    compiler = query.get_compiler(using="default")
    lookup = query.where.children[0]
    sql, params = batch.AnyOf.as_sql(lookup, compiler, connection)  # what SQLite compiles
    assert sql.endswith(" IN (%s, %s)") and list(params) == [job.pk, 7]
