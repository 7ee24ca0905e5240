"""What a hot API request costs, held in CI: SQL statements of me/, the job page and a single
submit are constant and small; bearer tokens are cached yet revocation and deactivation take
effect at once; the values-based renderings answer byte for byte what the serializers answer."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from accounts import token_cache
from accounts.api import MeSerializer
from accounts.authentication import UserRateThrottle, hash_token
from accounts.models import ApiToken, Membership, ProjectMember, User
from accounts.services import api_token_create, api_token_revoke, user_set_active
from accounts.token_cache import TOMBSTONE, _key
from jobs.api import JOB_ROWS, JobDetailSerializer, JobSerializer
from jobs.models import ClusterAccount, Job, JobEvent
from jobs.selectors import job_get_for_user, job_list_for_user
from portal import middleware
from quotas.api import AllocationSerializer
from quotas.models import Allocation
from quotas.selectors import allocations_for_user
from tests import factories

# The figures reached (token cached, as for any client that polls): raise them only knowingly.
ME_STATEMENTS = 2  # organizations, projects
JOB_PAGE_STATEMENTS = 2  # the caller's project ids, the page
# project, cluster and what the access check reads in one statement, rates (cached per
# process, read here), then the hold, its entry, the job and its event in one statement (no
# transaction of its own)
SUBMIT_STATEMENTS = 3

BODY = {
    "cluster": "sim",
    "name": "train",
    "script": "#!/bin/bash\necho hi\n",
    "gpus": 1,
    "cpus": 1,
    "memory_mb": 1024,
    "time_limit_minutes": 60,
}


def _bearer(user: User) -> tuple[APIClient, str]:
    _, raw = api_token_create(actor=user, name="script")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client, raw


def _statements(client: APIClient, method: str, path: str, body: Any = None) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.post(path, body, format="json") if body else client.get(path)
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.CREATED), response.content
    return len(queries.captured_queries)


def _grow(alice: User, cluster: Any, size: int) -> None:
    """`size` more organizations and projects of alice's, each with an allocation and jobs."""
    for i in range(size):
        org = factories.OrganizationFactory(name=f"Org {i}", slug=f"org-{i}")
        Membership.objects.create(organization=org, user=alice, role=Membership.Role.ADMIN)
        project = factories.ProjectFactory(organization=org, name=f"P {i}", slug=f"p-{i}")
        ProjectMember.objects.create(project=project, user=alice, role=ProjectMember.Role.MEMBER)
        factories.AllocationFactory(project=project, clusters=[cluster])
        Job.objects.bulk_create(
            Job(project=project, user=alice, cluster=cluster, name=f"j{i}-{n}", script="true")
            for n in range(20)
        )


@pytest.mark.parametrize("size", [0, 4])
def test_me_the_job_page_and_a_submit_take_a_constant_small_number_of_statements(
    alice, tenant, sim_cluster, allocation, accounts, size
):
    _grow(alice, sim_cluster, size)
    client, _ = _bearer(alice)
    body = {**BODY, "project": str(tenant.project.uuid)}
    client.get("/api/v1/me/")  # the token is read once, then served from the cache

    assert _statements(client, "GET", "/api/v1/me/") == ME_STATEMENTS
    assert _statements(client, "GET", "/api/v1/jobs/?limit=50") == JOB_PAGE_STATEMENTS
    assert _statements(client, "POST", "/api/v1/jobs/", body) == SUBMIT_STATEMENTS
    assert Job.objects.filter(project=tenant.project, name="train").count() == 1


def test_a_revoked_token_stops_working_at_once_though_it_was_cached(alice, tenant):
    client, raw = _bearer(alice)
    elsewhere = caches.create_connection("default")  # another process's client of the cache
    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    assert isinstance(elsewhere.get(_key(hash_token(raw))), type(alice.api_tokens.get()))

    api_token_revoke(actor=alice, token=alice.api_tokens.get())
    response = client.get("/api/v1/me/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json()["detail"] == "This API token was revoked"
    assert elsewhere.get(_key(hash_token(raw))) == TOMBSTONE


def test_a_deactivated_user_s_tokens_stop_working_at_once_though_they_were_cached(alice, tenant):
    client, raw = _bearer(alice)
    other, _ = _bearer(alice)
    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    assert other.get("/api/v1/jobs/").status_code == HTTPStatus.OK

    user_set_active(actor=None, user=alice, is_active=False)

    alice.refresh_from_db()
    assert alice.is_active is False
    for each in (client, other):
        response = each.get("/api/v1/me/")
        assert response.status_code == HTTPStatus.UNAUTHORIZED
        assert response.json()["detail"] == "This account is disabled"
    assert caches.create_connection("default").get(_key(hash_token(raw))) == TOMBSTONE


def test_a_token_deactivated_in_the_admin_stops_working_at_once(admin_client, alice, tenant):
    client, _ = _bearer(alice)
    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    token = alice.api_tokens.get()

    admin_client.post(
        f"/django-admin/accounts/apitoken/{token.pk}/delete/", {"post": "yes"}, secure=True
    )

    assert not alice.api_tokens.exists()
    assert client.get("/api/v1/me/").status_code == HTTPStatus.UNAUTHORIZED


def _json(data: Any) -> bytes:
    return JSONRenderer().render(data)


def test_the_job_page_answers_byte_for_byte_what_the_serializer_answers(
    alice, bob, tenant, sim_cluster
):
    now = timezone.now().replace(microsecond=123456)
    variants: list[dict[str, Any]] = [
        {},
        {"state": "completed", "exit_code": 0, "charged_cost": Decimal("0.1")},
        {"state": "failed", "exit_code": -9, "charged_cost": Decimal("12.345678")},
        {"gpu_type": "h100", "gpus": 8, "array": "0-99%4", "array_size": 100},
        {"started_at": now, "ended_at": now + timedelta(hours=1), "backend_id": "123"},
        {"estimated_cost": Decimal("1000000"), "user": bob, "name": 'ünïcødé «job» "q"'},
        {"state": "running", "started_at": now - timedelta(days=400), "gpus": 0, "cpus": 64},
    ]
    for index, extra in enumerate(variants):
        fields = {"name": f"job-{index}", "user": alice, **extra}
        Job.objects.create(
            project=tenant.project,
            cluster=sim_cluster,
            script="true",
            created_at=now - timedelta(seconds=index),
            **fields,
        )
    client = APIClient()
    client.force_authenticate(alice)

    response = client.get("/api/v1/jobs/?limit=50")

    assert response.status_code == HTTPStatus.OK
    expected = JobSerializer(job_list_for_user(user=alice), many=True).data
    assert len(expected) == len(variants)
    assert _json(response.json()["results"]) == _json(expected)
    assert _json(response.data["results"]) == _json(expected)


def test_a_renderer_reads_the_current_time_zone_afresh_for_each_rendering(
    alice, tenant, sim_cluster
):
    """Its converters are built once per thread; what they read of the thread's state is not
    kept from one rendering to the next."""
    Job.objects.create(
        project=tenant.project, cluster=sim_cluster, user=alice, name="j", script="true",
        started_at=timezone.now(),
    )  # fmt: skip
    rows = job_list_for_user(user=alice)

    for zone in ("Europe/Paris", "UTC", "America/New_York"):
        with timezone.override(zone):
            rendered = JOB_ROWS.render(rows.values(*JOB_ROWS.keys))
            expected = JobSerializer(rows, many=True).data
        assert _json(rendered) == _json(expected)
        assert rendered[0]["started_at"] == expected[0]["started_at"]


def test_allocations_answer_byte_for_byte_what_the_serializer_answers(
    alice, tenant, sim_cluster, allocation
):
    other = factories.ClusterFactory(name="a-first", kind=sim_cluster.kind)
    factories.AllocationFactory(project=tenant.project, clusters=[sim_cluster, other], memo="two")
    factories.AllocationFactory(project=tenant.project, clusters=[], memo="")
    Allocation.objects.filter(pk=allocation.pk).update(
        held=Decimal("12.3456"), charged=Decimal("0.0001"), status="suspended"
    )
    client = APIClient()
    client.force_authenticate(alice)

    response = client.get(f"/api/v1/allocations/?project={tenant.project.uuid}")

    assert response.status_code == HTTPStatus.OK
    rows = allocations_for_user(alice).filter(project=tenant.project).order_by("ends_at", "id")
    expected = AllocationSerializer(rows, many=True).data
    assert len(expected) == 3
    assert _json(response.data["results"]) == _json(expected)


def test_me_answers_byte_for_byte_what_the_serializer_answers(alice, tenant, mallory_tenant):
    tenant.org.billing_email = ""
    tenant.org.save()
    managed = factories.OrganizationFactory(
        name="Another Lab", slug="another", billing_email="b@x.org"
    )
    Membership.objects.create(organization=managed, user=alice, role=Membership.Role.ADMIN)
    factories.ProjectFactory(organization=managed, name="Not a member", slug="nm")
    client, _ = _bearer(alice)

    response = client.get("/api/v1/me/")

    assert response.status_code == HTTPStatus.OK
    expected = MeSerializer(alice).data
    assert [p["role"] for p in expected["projects"]] == [None, "pi"]
    assert response.content == _json(expected)
    assert not ClusterAccount.objects.exists()  # nothing written by a read


def test_a_submit_and_a_job_answer_byte_for_byte_what_the_serializer_answers(
    alice, tenant, sim_cluster, allocation, accounts
):
    client, _ = _bearer(alice)
    body = {**BODY, "project": str(tenant.project.uuid), "env": {"A": "1"}, "array": "0-3"}

    created = client.post("/api/v1/jobs/", body, format="json")
    job = job_get_for_user(user=alice, job_uuid=created.json()["id"])
    polled = client.get(f"/api/v1/jobs/{job.uuid}/")

    assert created.status_code == HTTPStatus.CREATED
    assert polled.status_code == HTTPStatus.OK
    expected = _json(JobDetailSerializer(job).data)
    assert created.content == expected
    assert polled.content == expected
    assert created.json()["held"] != "0.0000"
    assert len(created.json()["events"]) == 1


def test_a_finished_job_answers_byte_for_byte_what_the_serializer_answers(
    alice, bob, tenant, sim_cluster
):
    now = timezone.now()
    job = Job.objects.create(
        project=tenant.project,
        user=bob,
        cluster=sim_cluster,
        name="done",
        script="true",
        state="completed",
        exit_code=0,
        started_at=now - timedelta(minutes=3),
        ended_at=now,
        elapsed_seconds=180,
        usage={"gpu_hours": "0.05"},
        charged_cost=Decimal("0.1"),
        command=["python", "-c", "print(1)"],
    )
    JobEvent.objects.create(job=job, from_state="", to_state="pending", message="m", actor=alice)
    JobEvent.objects.create(job=job, from_state="pending", to_state="completed", message="")
    client = APIClient()
    client.force_authenticate(alice)

    response = client.get(f"/api/v1/jobs/{job.uuid}/")

    assert response.status_code == HTTPStatus.OK
    fresh = job_get_for_user(user=alice, job_uuid=job.uuid)
    assert response.content == _json(JobDetailSerializer(fresh).data)
    assert [e["actor"] for e in response.json()["events"]] == ["alice", None]


def test_a_cookie_session_still_needs_its_csrf_token_on_the_api(alice, tenant):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(alice)

    refused = browser.post("/api/v1/tokens/", {"name": "x"}, format="json")
    page = browser.get("/")  # a page of the site sets the CSRF cookie
    token = page.cookies["csrftoken"].value if "csrftoken" in page.cookies else ""
    accepted = browser.post("/api/v1/tokens/", {"name": "x"}, format="json", HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == HTTPStatus.FORBIDDEN
    assert "CSRF" in refused.json()["detail"]
    assert accepted.status_code == HTTPStatus.CREATED, accepted.content
    assert alice.api_tokens.count() == 1


def test_a_bearer_call_needs_no_csrf_token_and_never_touches_the_session(alice, bob, tenant):
    client, _ = _bearer(alice)
    client.force_login(bob)  # a session cookie of someone else rides along
    client.handler.enforce_csrf_checks = True

    response = client.post("/api/v1/tokens/", {"name": "from a script"}, format="json")

    assert response.status_code == HTTPStatus.CREATED
    assert alice.api_tokens.filter(name="from a script").exists()
    assert not bob.api_tokens.exists()


@pytest.mark.parametrize(
    ("path", "authorization", "skipped"),
    [
        ("/api/v1/me/", "Bearer gpuc_x_y", True),
        ("/api/v1/me/", "bearer gpuc_x_y", True),
        ("/api/v1/me/", "", False),
        ("/api/v1/me/", "Basic eDp5", False),
        ("/jobs/", "Bearer gpuc_x_y", False),
    ],
)
def test_only_bearer_api_calls_skip_the_session_auth_and_messages_middleware(
    rf, path, authorization, skipped
):
    seen: list[Any] = []
    chain = middleware.SessionMiddleware(
        middleware.AuthenticationMiddleware(
            middleware.MessageMiddleware(lambda request: seen.append(request) or HttpResponse())
        )
    )
    request = rf.get(path, HTTP_AUTHORIZATION=authorization) if authorization else rf.get(path)

    chain(request)

    [passed] = seen
    assert hasattr(passed, "session") is not skipped
    assert hasattr(passed, "_messages") is not skipped
    assert passed.user.is_authenticated is False


def test_tokens_are_not_cached_in_a_cache_that_other_processes_cannot_see(alice, tenant, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    client, raw = _bearer(alice)

    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    assert caches["default"].get(_key(hash_token(raw))) is None
    api_token_revoke(actor=alice, token=alice.api_tokens.get())
    assert client.get("/api/v1/me/").status_code == HTTPStatus.UNAUTHORIZED


ALLOCATION_STATEMENTS = 2  # the visible project's allocations, their clusters


@pytest.mark.parametrize("size", [0, 4])
def test_a_project_s_allocations_take_a_constant_small_number_of_statements(
    alice, tenant, sim_cluster, allocation, size
):
    _grow(alice, sim_cluster, size)
    for _ in range(size):
        factories.AllocationFactory(project=tenant.project, clusters=[sim_cluster])
    client, _ = _bearer(alice)
    path = f"/api/v1/allocations/?project={tenant.project.uuid}"
    client.get(path)

    assert _statements(client, "GET", path) == ALLOCATION_STATEMENTS
    assert len(client.get(path).json()["results"]) == 1 + size


def test_each_request_gets_its_own_copy_of_the_token_and_user_this_process_keeps(alice):
    token, _ = api_token_create(actor=alice, name="kept")
    token = ApiToken.objects.select_related("user").get(pk=token.pk)
    first = token_cache._copy(token)
    first.user.first_name = "changed by a request"
    first.user._state.fields_cache["leak"] = object()
    second = token_cache._copy(token)

    assert first is not token and first.user is not token.user
    assert (second.pk, second.user.pk, second.user_id) == (token.pk, alice.pk, alice.pk)
    assert second.user.first_name == token.user.first_name != "changed by a request"
    assert "leak" not in token.user._state.fields_cache
    assert second.user._state.db == token.user._state.db and not second.user._state.adding


def test_a_token_this_process_keeps_is_refused_once_another_process_revokes_it(alice, tenant):
    client, raw = _bearer(alice)
    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK  # served from the copy
    assert hash_token(raw) in token_cache._local

    # Another process revokes it: its row, its tombstone and the generation, through its own
    # client of the shared cache; nothing of this process's memory is touched.
    elsewhere = caches.create_connection("default")
    ApiToken.objects.filter(token_hash=hash_token(raw)).update(revoked_at=timezone.now())
    elsewhere.set(_key(hash_token(raw)), TOMBSTONE, 60)
    elsewhere.add(token_cache.GENERATION_KEY, 0, None)  # as forget_tokens does
    elsewhere.incr(token_cache.GENERATION_KEY)
    response = client.get("/api/v1/me/")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json()["detail"] == "This API token was revoked"


def test_a_user_deactivated_by_another_process_is_refused_at_once(alice, tenant):
    client, _ = _bearer(alice)
    assert client.get("/api/v1/jobs/").status_code == HTTPStatus.OK
    assert client.get("/api/v1/jobs/").status_code == HTTPStatus.OK

    User.objects.filter(pk=alice.pk).update(is_active=False)
    elsewhere = caches.create_connection("default")
    for token_hash in alice.api_tokens.values_list("token_hash", flat=True):
        elsewhere.set(_key(token_hash), TOMBSTONE, 60)
    elsewhere.add(token_cache.GENERATION_KEY, 0, None)  # as forget_tokens does
    elsewhere.incr(token_cache.GENERATION_KEY)

    assert client.get("/api/v1/jobs/").json()["detail"] == "This account is disabled"


def test_a_request_served_from_the_kept_token_counts_once_against_the_rate(alice, tenant):
    client, _ = _bearer(alice)
    client.get("/api/v1/me/")  # the token is read and kept
    throttle = UserRateThrottle()
    key = f"{throttle.cache_format % {'scope': 'user', 'ident': alice.pk}}"
    window = int(throttle.timer() // throttle.duration)
    before = caches["default"].get(f"{key}:{window}")

    for _ in range(3):
        assert client.get("/api/v1/me/").status_code == HTTPStatus.OK

    after = caches["default"].get(f"{key}:{int(throttle.timer() // throttle.duration)}")
    assert after - before == 3 or window != int(throttle.timer() // throttle.duration)


def test_the_job_page_read_from_compiled_statements_answers_what_the_orm_answers(
    alice, mallory, tenant, mallory_tenant, sim_cluster
):
    other_cluster = factories.ClusterFactory(name="other", kind=sim_cluster.kind)
    now = timezone.now()
    for index, (cluster, state, origin) in enumerate(
        [
            (sim_cluster, "completed", "portal"),
            (other_cluster, "failed", "portal"),
            (sim_cluster, "running", "direct"),
            (other_cluster, "completed", "direct"),
        ]
    ):
        Job.objects.create(
            project=tenant.project,
            cluster=cluster,
            user=alice,
            name=f"j{index}",
            script="true",
            state=state,
            origin=origin,
            created_at=now - timedelta(seconds=index),
        )
    Job.objects.create(project=mallory_tenant.project, cluster=sim_cluster, user=mallory, name="m")
    client, _ = _bearer(alice)
    queries = [
        "",
        f"project={tenant.project.uuid}",
        f"project={tenant.project.slug}",
        f"project={mallory_tenant.project.uuid}",
        "state=completed",
        "cluster=other",
        "cluster=nowhere",
        "origin=direct",
        f"project={tenant.project.slug}&state=completed&cluster=sim&origin=portal",
        "page_size=2",
    ]
    for query in queries:
        params = dict(pair.split("=") for pair in query.split("&") if pair)
        params.pop("page_size", None)
        expected = job_list_for_user(user=alice, **params)
        response = client.get(f"/api/v1/jobs/?{query}")
        page_size = 2 if "page_size" in query else 50
        assert response.status_code == HTTPStatus.OK, query
        assert _json(response.json()["results"]) == _json(
            JobSerializer(expected[:page_size], many=True).data
        ), query
        assert (response.json()["next"] is not None) == (expected.count() > page_size), query


def test_a_statement_a_connection_repeats_is_prepared_by_postgresql(alice, tenant):
    # portal.settings binds parameters on the server and lets psycopg prepare a statement run a
    # fifth time on a connection: the polled requests then skip PostgreSQL's parse and plan.
    client, _ = _bearer(alice)
    for _ in range(6):
        assert client.get("/api/v1/me/").status_code == HTTPStatus.OK

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]

    assert connection.settings_dict["OPTIONS"]["server_side_binding"] is True
    assert any("accounts_organization" in sql for sql in prepared), prepared


def test_a_project_without_allocations_lists_none_and_an_invisible_or_unknown_one_is_a_404(
    alice, tenant, sim_cluster, allocation
):
    bare = factories.ProjectFactory(organization=tenant.org, name="Bare", slug="bare")
    ProjectMember.objects.create(project=bare, user=alice, role=ProjectMember.Role.MEMBER)
    stranger = factories.ProjectFactory(
        organization=factories.OrganizationFactory(name="Elsewhere", slug="elsewhere"),
        name="Theirs",
        slug="theirs",
    )
    factories.AllocationFactory(project=stranger, clusters=[sim_cluster])
    client, _ = _bearer(alice)

    empty = client.get(f"/api/v1/allocations/?project={bare.uuid}")
    assert empty.status_code == HTTPStatus.OK and empty.json()["results"] == []
    for project in (stranger.uuid, "9f1c3a52-0000-4000-8000-000000000000", "not-a-uuid"):
        response = client.get(f"/api/v1/allocations/?project={project}")
        assert response.status_code == HTTPStatus.NOT_FOUND
        assert response.json()["detail"] == "Project not found"
    only_active = client.get(f"/api/v1/allocations/?project={tenant.project.uuid}&status=active")
    assert [row["uuid"] for row in only_active.json()["results"]] == [str(allocation.uuid)]
    suspended = client.get(f"/api/v1/allocations/?project={tenant.project.uuid}&status=suspended")
    assert suspended.status_code == HTTPStatus.OK and suspended.json()["results"] == []


def test_a_token_in_use_is_touched_once_a_minute_and_the_cache_asked_once_per_entry(
    alice, tenant, monkeypatch
):
    client, raw = _bearer(alice)
    token_hash = hash_token(raw)
    asked: list[str] = []
    add = token_cache.cache.add

    def counting_add(key: str, *args: Any, **kwargs: Any) -> bool:
        asked.append(key)
        return add(key, *args, **kwargs)

    monkeypatch.setattr(token_cache.cache, "add", counting_add)
    touched = f"gpuc:api-token-touched:{token_hash}"

    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    first = ApiToken.objects.get(token_hash=token_hash).last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=5)
    assert asked.count(touched) == 1

    # The kept copy still says "never used"; the process does not ask again for a while.
    for _ in range(5):
        assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    assert asked.count(touched) == 1

    # ENTRY_SECONDS later it asks once; another request wrote within the minute, so no write.
    token_cache._touch_asked[token_hash] = 0.0
    assert client.get("/api/v1/me/").status_code == HTTPStatus.OK
    assert asked.count(touched) == 2
    assert ApiToken.objects.get(token_hash=token_hash).last_used_at == first
