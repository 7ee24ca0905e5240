"""The cheap submission path: one batch forward per cluster, cached rates that still follow
their effective dates, a bounded number of queries, an optimistic hold, a counting throttle."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.db.models.sql import InsertQuery
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.authentication import UserRateThrottle
from jobs.models import Job, JobEvent
from jobs.services import jobs_forward_batch, jobs_record_forwarded
from jobs.services.submit import _job_insert
from quotas.exceptions import InsufficientQuota
from quotas.models import Allocation, Hold, LedgerEntry, Rate
from quotas.reconcile import reconcile_ledger
from quotas.services import ledger_credit, ledger_hold, rate_create
from tests import factories

pytestmark = pytest.mark.django_db


def test_one_batch_forwards_every_pending_job_of_the_cluster_and_records_its_backend_id(
    submit, sim_cluster
):
    jobs = [submit(sim_cluster, name=f"batch-{i}") for i in range(5)]

    assert jobs_forward_batch(cluster_id=sim_cluster.pk) == 5

    for job in jobs:
        job.refresh_from_db()
        assert job.state == Job.State.QUEUED
        assert job.backend_id
        assert job.submitted_at is not None
        assert JobEvent.objects.filter(
            job=job,
            to_state=Job.State.QUEUED,
            message=f"Submitted to the cluster as {job.backend_id}",
        ).exists()
    assert len({job.backend_id for job in jobs}) == 5
    assert jobs_forward_batch(cluster_id=sim_cluster.pk) == 0


def test_a_batch_leaves_jobs_already_retrying_to_their_own_task(submit, sim_cluster):
    retrying = submit(sim_cluster, name="retrying")
    Job.objects.filter(pk=retrying.pk).update(forward_attempts=1)

    assert jobs_forward_batch(cluster_id=sim_cluster.pk) == 0

    retrying.refresh_from_db()
    assert retrying.state == Job.State.PENDING
    assert retrying.backend_id == ""


def test_a_batch_never_overwrites_a_job_cancelled_while_it_was_being_submitted(submit, sim_cluster):
    job = submit(sim_cluster, name="cancelled")
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)
    jobs_record_forwarded([(job, "12345")])

    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert job.backend_id == ""
    assert not JobEvent.objects.filter(job=job, to_state=Job.State.QUEUED).exists()


def test_a_new_rate_applies_to_the_next_submission_and_a_future_one_only_from_its_date(
    submit, sim_cluster
):
    before = submit(sim_cluster, name="before")
    rate_create(
        actor=None,
        cluster=sim_cluster,
        resource=Rate.Resource.GPU_HOUR,
        gpu_type="h100",
        su_per_unit=Decimal("5"),
    )
    rate_create(
        actor=None,
        cluster=sim_cluster,
        resource=Rate.Resource.CPU_HOUR,
        su_per_unit=Decimal("100"),
        effective_from=timezone.now() + timedelta(hours=1),
    )

    after = submit(sim_cluster, name="after")

    assert before.estimated_cost == Decimal("2.1100")
    assert after.estimated_cost == Decimal("5.1100")


def test_a_submission_through_the_api_takes_at_most_ten_queries(
    api_alice, tenant, sim_cluster, allocation, accounts
):
    body = {
        "project": tenant.project.slug,
        "cluster": sim_cluster.name,
        "name": "counted",
        "script": "echo hi\n",
        "gpus": 1,
        "time_limit_minutes": 60,
    }
    api_alice.post("/api/v1/jobs/", body, format="json")  # warms the rate cache

    with CaptureQueriesContext(connection) as queries:
        response = api_alice.post("/api/v1/jobs/", body, format="json")

    assert response.status_code == HTTPStatus.CREATED
    assert len(queries.captured_queries) <= 10, [q["sql"][:80] for q in queries]
    job = Job.objects.get(uuid=response.json()["id"])
    assert response.json()["held"] == str(job.hold.amount)
    assert [e["to_state"] for e in response.json()["events"]] == [Job.State.PENDING]


def test_a_repeated_hold_key_returns_the_first_hold_even_when_the_balance_is_gone(
    tenant, cluster, allocation
):
    first = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(600), key="k-1"
    )
    with pytest.raises(InsufficientQuota):
        ledger_hold(
            actor=None, project=tenant.project, cluster=cluster, amount=Decimal(600), key="k-2"
        )

    again = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(600), key="k-1"
    )

    allocation.refresh_from_db()
    assert again.pk == first.pk
    assert allocation.held == Decimal(600)
    assert Hold.objects.filter(key__in=["k-1", "k-2"]).count() == 1


def test_the_user_throttle_counts_requests_per_window_and_refuses_the_one_over_the_rate():
    class ThreePerMinute(UserRateThrottle):
        rate = "3/min"

    request = SimpleNamespace(
        user=SimpleNamespace(is_authenticated=True, pk=-timezone.now().microsecond)
    )
    answers = [ThreePerMinute().allow_request(request, None) for _ in range(4)]

    refused = ThreePerMinute()
    assert answers == [True, True, True, False]
    assert refused.allow_request(request, None) is False
    assert 0 < refused.wait() <= 60


@pytest.mark.django_db(transaction=True)
def test_a_submission_that_loses_an_idempotency_race_returns_the_winner_and_keeps_no_hold(
    submit, sim_cluster
):
    inserted, winner = threading.Event(), {}

    def first_request() -> None:
        try:
            with transaction.atomic():
                winner["job"] = submit(sim_cluster, name="winner", idempotency_key="same")
                inserted.set()
                time.sleep(0.5)  # the loser's INSERT waits on the key meanwhile
        finally:
            connection.close()

    thread = threading.Thread(target=first_request)
    thread.start()
    assert inserted.wait(10)
    loser = submit(sim_cluster, name="loser", idempotency_key="same")
    thread.join()

    assert loser.pk == winner["job"].pk
    assert Job.objects.filter(idempotency_key="same").count() == 1
    assert list(Hold.objects.values_list("job_uuid", flat=True)) == [loser.uuid]


# --- the paid submission in one statement ---------------------------------------------------


def test_a_paid_submission_writes_its_hold_entry_job_and_event_in_one_statement(
    submit, sim_cluster, allocation
):
    with CaptureQueriesContext(connection) as queries:
        job = submit(sim_cluster, name="at-once")
    writes = [q["sql"] for q in queries.captured_queries if "INSERT" in q["sql"]]

    assert len(writes) == 1 and not any(q["sql"] == "BEGIN" for q in queries.captured_queries)
    stored = Job.objects.select_related("hold").get(pk=job.pk)
    assert stored.hold is not None and stored.hold.pk == job.hold.pk
    assert stored.hold.key == f"job:{job.uuid}" and stored.hold.job_uuid == job.uuid
    assert stored.hold.amount == job.estimated_cost > 0
    assert LedgerEntry.objects.get(hold=stored.hold).amount == job.estimated_cost
    assert list(JobEvent.objects.filter(job=job).values_list("message", flat=True)) == [
        f"Submitted; {job.estimated_cost} SU held"
    ]
    allocation.refresh_from_db()
    assert allocation.held == job.estimated_cost
    assert reconcile_ledger().ok


def test_the_one_statement_has_few_enough_parameters_for_psycopg_to_cache_its_conversion(
    submit, sim_cluster, allocation
):
    from psycopg._queries import MAX_CACHED_STATEMENT_PARAMS  # 50 in psycopg 3.2 and 3.3

    seen: list[tuple[str, object]] = []

    def spy(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        job = submit(sim_cluster, name="cached", env={"A": "1"})
    ((sql, params),) = [(sql, params) for sql, params in seen if "INSERT" in sql]

    # Named, each value once (hold_ctes'), the job's and the event's None written as NULL:
    # psycopg re-parsed the 68 positional parameters of this statement on every request.
    assert isinstance(params, dict) and len(params) <= MAX_CACHED_STATEMENT_PARAMS
    assert "%s" not in sql and None not in params.values()  # the Nones went in as NULL
    assert sql.count("NULL") > 1  # the hold's own settled_at NULL and the job's
    stored = Job.objects.get(pk=job.pk)
    assert stored.env == {"A": "1"} and stored.started_at is None and stored.ended_at is None
    assert stored.hold_id == job.hold.pk and reconcile_ledger().ok


def test_a_paid_submission_takes_the_earliest_ending_allocation_that_covers_it(
    submit, sim_cluster, tenant, allocation
):
    soon = factories.AllocationFactory(
        project=tenant.project,
        clusters=[sim_cluster],
        ends_at=allocation.ends_at - timedelta(days=1),
    )
    ledger_credit(actor=None, allocation=soon, amount=Decimal("1"), key="soon-credit")

    small = submit(sim_cluster, name="small", gpus=0, cpus=1, time_limit_minutes=60)
    large = submit(sim_cluster, name="large", gpus=4, time_limit_minutes=60)

    assert small.hold.allocation_id == soon.pk  # ends first and covers 0.11 SU
    assert large.hold.allocation_id == allocation.pk  # 8.04 SU: only the later one covers it
    assert reconcile_ledger().ok


def test_a_submission_no_allocation_covers_is_refused_with_nothing_written(
    submit, sim_cluster, allocation
):
    jobs_before, entries_before = Job.objects.count(), LedgerEntry.objects.count()

    with pytest.raises(InsufficientQuota, match="short by"):
        submit(sim_cluster, name="too-big", gpus=8, gpu_type="h100", time_limit_minutes=20160)

    assert (Job.objects.count(), LedgerEntry.objects.count()) == (jobs_before, entries_before)
    assert not Hold.objects.exists()
    allocation.refresh_from_db()
    assert allocation.held == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_never_hold_more_than_the_allocation_has(submit, sim_cluster):
    # 1000 SU; each job holds 2 SU/h100-hour x 8 GPUs x 10 h + CPU and memory (about 161 SU):
    # six fit, and sixteen threads race for them.
    outcomes: list[str] = []

    def one(i: int) -> None:
        try:
            submit(sim_cluster, name=f"race-{i}", gpus=8, gpu_type="h100", time_limit_minutes=600)
            outcomes.append("held")
        except InsufficientQuota:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    held = Job.objects.filter(name__startswith="race-")
    assert outcomes.count("held") == held.count() == Hold.objects.count()
    assert outcomes.count("refused") == 16 - held.count() > 0
    allocation = Allocation.objects.get()
    assert allocation.held == sum(job.estimated_cost for job in held) <= allocation.credited
    assert reconcile_ledger().ok


@pytest.mark.parametrize("size", [1, 20])
def test_forwarding_a_batch_takes_three_statements_whatever_its_size(submit, sim_cluster, size):
    jobs = [submit(sim_cluster, name=f"counted-{i}") for i in range(size)]

    with CaptureQueriesContext(connection) as queries:
        assert jobs_forward_batch(cluster_id=sim_cluster.pk) == size

    # the claim, the jobs' rows, the record (jobs queued and their events)
    assert len(queries.captured_queries) == 3, [q["sql"][:60] for q in queries]
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], state=Job.State.QUEUED).count() == size
    assert JobEvent.objects.filter(job__in=jobs, to_state=Job.State.QUEUED).count() == size


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_the_jobs_another_forwarder_holds(submit, sim_cluster):
    held, free = submit(sim_cluster, name="held"), submit(sim_cluster, name="free")
    locked, release = threading.Event(), threading.Event()

    def other_forwarder() -> None:
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_forwarder)
    thread.start()
    assert locked.wait(10)
    try:
        assert jobs_forward_batch(cluster_id=sim_cluster.pk) == 1
    finally:
        release.set()
        thread.join()

    held.refresh_from_db()
    free.refresh_from_db()
    assert (held.state, free.state) == (Job.State.PENDING, Job.State.QUEUED)
    assert jobs_forward_batch(cluster_id=sim_cluster.pk) == 1  # its turn, once free


@pytest.mark.parametrize("hold_from", ["", "hold"])
def test_the_job_insert_compiled_once_per_process_matches_what_django_compiles_for_each_job(
    sim_cluster, tenant, alice, hold_from
):
    fields = [f for f in Job._meta.local_concrete_fields if f is not Job._meta.auto_field]
    at_hold = fields.index(Job._meta.get_field("hold"))

    def django_compiles(job: Job) -> tuple[str, list[object]]:
        query = InsertQuery(Job)
        query.insert_values(fields, [job])
        compiler = query.get_compiler(using=connection.alias)
        compiler.returning_fields = [Job._meta.pk]
        ((sql, params),) = compiler.as_sql()
        if not hold_from:
            return sql, list(params)
        # INSERT ... SELECT ..., hold.id, ... FROM hold: the hold's value comes from the CTE.
        head, _, rest = sql.partition(" VALUES (")
        values, _, returning = rest.rpartition(") RETURNING ")
        placeholders = values.split(", ")
        placeholders[at_hold] = "hold.id"
        sql = f"{head} SELECT {', '.join(placeholders)} FROM hold RETURNING {returning}"  # noqa: S608 (compiled text)
        return sql, [*params[:at_hold], *params[at_hold + 1 :]]

    jobs = [
        Job(project=tenant.project, user=alice, cluster=sim_cluster, name="a", script="true"),
        Job(
            project=tenant.project, user=None, cluster=sim_cluster, name="b", image="busybox",
            command=["sh", "-c", "echo hi"], env={"A": "1"}, gpus=2, gpu_type="h100",
            time_limit_minutes=90, estimated_cost=Decimal("1.2500"), exit_code=3,
            started_at=timezone.now(), origin=Job.Origin.DIRECT,
        ),
    ]  # fmt: skip
    names = [f.name for f in fields if not (hold_from and f.name == "hold")]
    stamp = names.index("updated_at")  # auto_now stamps it at each compile: compared apart
    for job in jobs:
        sql, params = _job_insert(job, hold_from=hold_from)
        expected_sql, expected = django_compiles(job)

        assert sql == expected_sql
        mine, django = _plain(params), _plain(expected)
        assert mine[:stamp] + mine[stamp + 1 :] == django[:stamp] + django[stamp + 1 :]
        assert [type(v) for v in params] == [type(v) for v in expected]


def _plain(params: list[object]) -> list[object]:
    """psycopg's Jsonb wrappers compare by identity: their objects instead."""
    return [getattr(value, "obj", value) for value in params]
