"""Self-service cluster access: members ask for an account on a cluster for a project; the
cluster's policy approves at once or staff do; approval provisions the identity (here through
the ldap provisioner, against the real slapd of deploy/ldap); removal from the project revokes.

Tasks run eagerly (in-process, from the on-commit hooks that queue them), so each test follows
the same path as production: service -> on_commit -> task -> service."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus

import pytest
from django.contrib.auth.models import Group
from django.core import mail

from accounts.models import ProjectMember, User
from accounts.services import project_member_remove
from jobs.models import ClusterAccessRequest, ClusterAccount
from jobs.services import username_candidates
from portal.celery import app as celery_app
from quotas.models import Allocation, Cluster
from quotas.policy import FACILITY_ADMINS_GROUP
from tests import factories
from tests.conftest import _api_client
from tests.ldap_site import Corner

pytestmark = pytest.mark.ldap
URL = "/api/v1/cluster-access-requests/"
State = ClusterAccessRequest.State


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Celery tasks run in-process when queued (the on-commit hooks still queue them)."""
    conf = celery_app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager, conf.task_eager_propagates = True, True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


@pytest.fixture
def frank(db: None) -> User:
    """A facility admin (group member, not Django staff)."""
    user = factories.UserFactory(username="frank", email="frank@facility.example")
    user.groups.add(Group.objects.get_or_create(name=FACILITY_ADMINS_GROUP)[0])
    return user


@pytest.fixture
def api_frank(frank: User):
    return _api_client(frank)


def _directory_cluster(cluster: Cluster, corner: Corner, policy: str) -> Cluster:
    cluster.options = {
        **cluster.options,
        "access_policy": policy,
        "provisioner": "ldap",
        "provisioner_options": corner.options(),
    }
    cluster.save()
    return cluster


@pytest.fixture
def auto_cluster(cluster: Cluster, allocation: Allocation, ldap_corner: Corner) -> Cluster:
    """The simulated cluster with 1000 SU for alice's project, accounts approved at once."""
    return _directory_cluster(cluster, ldap_corner, "auto")


@pytest.fixture
def approval_cluster(cluster: Cluster, allocation: Allocation, ldap_corner: Corner) -> Cluster:
    """The same, but every request waits for staff."""
    return _directory_cluster(cluster, ldap_corner, "approval")


def _ask(api, **fields):
    return api.post(URL, {"project": "folding", "cluster": "sim", **fields}, format="json")


# --- the auto policy -------------------------------------------------------------------------


def test_auto_policy_provisions_at_once_for_a_member_with_an_active_allocation(
    api_bob, bob, auto_cluster, ldap_corner, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob)

    assert response.status_code == HTTPStatus.CREATED, response.json()
    assert response.json()["state"] == State.APPROVED  # as the request committed
    request = ClusterAccessRequest.objects.get(uuid=response.json()["id"])
    assert request.state == State.PROVISIONED
    assert request.automatic and request.decided_by is None and request.decided_at
    account = ClusterAccount.objects.get(user=bob, cluster=auto_cluster)
    assert account.username == "bob" == request.username
    assert account.uid >= 1000
    assert account.provision_key == request.uuid.hex
    assert request.account == account
    entry = ldap_corner.entries()["bob"]
    assert int(entry["uidNumber"][0]) == account.uid
    assert ldap_corner.members() == ["bob"]
    assert [m.to for m in mail.outbox] == [["bob@uni.example"]]
    assert "is ready" in mail.outbox[0].subject
    assert "bob" in mail.outbox[0].body


def test_auto_policy_waits_for_staff_when_the_allocation_is_not_active(
    api_bob, auto_cluster, allocation, ldap_corner, eager_tasks, django_capture_on_commit_callbacks
):
    allocation.status = Allocation.Status.SUSPENDED
    allocation.save()

    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob)

    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["state"] == State.PENDING
    assert ldap_corner.entries() == {}


def test_a_provisioned_member_can_then_submit_a_job_as_the_new_account(
    api_bob, bob, auto_cluster, eager_tasks, django_capture_on_commit_callbacks
):
    body = {
        "project": "folding",
        "cluster": "sim",
        "name": "first",
        "script": "echo hi\n",
        "time_limit_minutes": 5,
    }
    refused = api_bob.post("/api/v1/jobs/", body, format="json")
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert refused.json()["code"] == "no_cluster_account"
    assert "cluster-access-requests" in refused.json()["detail"]

    with django_capture_on_commit_callbacks(execute=True):
        _ask(api_bob)
    response = api_bob.post("/api/v1/jobs/", body, format="json")

    assert response.status_code == HTTPStatus.CREATED, response.json()
    from jobs.models import Job

    assert Job.objects.get(uuid=response.json()["id"]).cluster_username == "bob"


# --- the approval policy ---------------------------------------------------------------------


def test_approval_policy_keeps_the_request_pending_until_staff_approve(
    api_bob,
    api_frank,
    bob,
    frank,
    approval_cluster,
    ldap_corner,
    eager_tasks,
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob, username="bobby")

    assert response.status_code == HTTPStatus.CREATED
    request = ClusterAccessRequest.objects.get(uuid=response.json()["id"])
    assert request.state == State.PENDING
    assert not ClusterAccount.objects.filter(user=bob).exists()
    assert ldap_corner.entries() == {}
    assert sorted(tuple(m.to) for m in mail.outbox) == [
        ("bob@uni.example",),
        ("frank@facility.example",),
    ]
    mail.outbox.clear()
    queue = api_frank.get(URL, {"state": "pending"}).json()["results"]
    assert [r["id"] for r in queue] == [str(request.uuid)]

    with django_capture_on_commit_callbacks(execute=True):
        approved = api_frank.post(f"{URL}{request.uuid}/approve/")

    assert approved.status_code == HTTPStatus.OK, approved.json()
    request.refresh_from_db()
    assert request.state == State.PROVISIONED
    assert request.decided_by == frank and not request.automatic
    assert ClusterAccount.objects.get(user=bob).username == "bobby"
    assert list(ldap_corner.entries()) == ["bobby"]
    assert [m.to for m in mail.outbox] == [["bob@uni.example"]]
    assert "bobby" in mail.outbox[0].subject


def test_staff_reject_with_a_reason_that_the_requester_is_told(
    api_bob, api_frank, approval_cluster, ldap_corner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request_id = _ask(api_bob).json()["id"]
    mail.outbox.clear()

    no_reason = api_frank.post(f"{URL}{request_id}/reject/", {"reason": " "}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_frank.post(
            f"{URL}{request_id}/reject/",
            {"reason": "Use the teaching cluster, it's free"},
            format="json",
        )
    again = api_frank.post(f"{URL}{request_id}/approve/")

    assert no_reason.status_code == HTTPStatus.BAD_REQUEST
    assert response.status_code == HTTPStatus.OK
    request = ClusterAccessRequest.objects.get(uuid=request_id)
    assert request.state == State.REJECTED
    assert request.reason == "Use the teaching cluster, it's free"
    assert again.status_code == HTTPStatus.CONFLICT
    assert again.json()["code"] == "access_request_state"
    assert ldap_corner.entries() == {}
    assert [m.to for m in mail.outbox] == [["bob@uni.example"]]
    assert "Use the teaching cluster, it's free" in mail.outbox[0].body


def test_a_member_cannot_approve_their_own_request(api_bob, approval_cluster, ldap_corner):
    request_id = _ask(api_bob).json()["id"]

    response = api_bob.post(f"{URL}{request_id}/approve/")

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert ClusterAccessRequest.objects.get(uuid=request_id).state == State.PENDING


def test_staff_see_and_act_on_pending_requests_on_their_page(
    client,
    bob,
    frank,
    approval_cluster,
    ldap_corner,
    eager_tasks,
    django_capture_on_commit_callbacks,
):
    request = _ask(_api_client(bob)).json()
    client.force_login(frank)

    page = client.get("/manage/access/")
    with django_capture_on_commit_callbacks(execute=True):
        approved = client.post(f"/manage/access/{request['id']}/approve/")

    assert page.status_code == HTTPStatus.OK
    assert "bob@uni.example" in page.content.decode()
    assert approved.status_code == HTTPStatus.FOUND
    assert ClusterAccessRequest.objects.get(uuid=request["id"]).state == State.PROVISIONED
    assert list(ldap_corner.entries()) == ["bob"]


# --- who may see what ------------------------------------------------------------------------


def test_mallory_gets_404_on_every_request_endpoint_and_page(
    api_mallory, mallory, mallory_tenant, client, api_bob, approval_cluster, ldap_corner
):
    request_id = _ask(api_bob).json()["id"]
    client.force_login(mallory)

    answers = [
        api_mallory.get(f"{URL}{request_id}/"),
        api_mallory.post(f"{URL}{request_id}/approve/"),
        api_mallory.post(f"{URL}{request_id}/reject/", {"reason": "no"}, format="json"),
        client.get("/manage/access/"),
        client.post(f"/manage/access/{request_id}/approve/"),
        client.post(f"/manage/access/{request_id}/reject/", {"reason": "no"}),
    ]

    assert [a.status_code for a in answers] == [HTTPStatus.NOT_FOUND] * len(answers)
    assert api_mallory.get(URL).json()["results"] == []
    assert ClusterAccessRequest.objects.get(uuid=request_id).state == State.PENDING


def test_a_non_member_cannot_ask_for_access_for_the_project(
    api_mallory, mallory_tenant, auto_cluster, ldap_corner
):
    response = _ask(api_mallory)

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert not ClusterAccessRequest.objects.exists()
    assert ldap_corner.entries() == {}


def test_a_cluster_without_a_provisioner_says_so(api_bob, cluster, allocation):
    response = _ask(api_bob)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "no self-service accounts" in response.json()["detail"]
    assert not ClusterAccessRequest.objects.exists()


def test_asking_twice_or_with_an_account_already_is_a_conflict(
    api_bob, bob, approval_cluster, ldap_corner
):
    first = _ask(api_bob)
    second = _ask(api_bob)
    ClusterAccessRequest.objects.all().delete()
    ClusterAccount.objects.create(user=bob, cluster=approval_cluster, username="bob", uid=4000)
    third = _ask(api_bob)

    assert first.status_code == HTTPStatus.CREATED
    assert second.status_code == HTTPStatus.CONFLICT
    assert third.status_code == HTTPStatus.CONFLICT
    assert third.json()["code"] == "already_has_account"


# --- bad input: clear 400s, nothing half-created ----------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a*)(uid=*", "bob;rm -rf /", "$(id)", "`id`", "bob)(|(uid=*", "Bob", "b ob", "-bob", "x" * 33],
)
def test_names_with_shell_or_ldap_metacharacters_get_a_400_and_nothing_is_written(
    api_bob, auto_cluster, ldap_corner, name, eager_tasks, django_capture_on_commit_callbacks
):
    counter = ldap_corner.counter()

    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob, username=name)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "username"
    assert "cluster user name" in response.json()["detail"]
    assert not ClusterAccessRequest.objects.exists()
    assert not ClusterAccount.objects.exists()
    assert ldap_corner.entries() == {}
    assert ldap_corner.counter() == counter


def test_the_400_names_the_characters_that_are_not_allowed(api_bob, auto_cluster, ldap_corner):
    response = _ask(api_bob, username="a*)(uid=*")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "'*'" in response.json()["detail"] and "'('" in response.json()["detail"]


def test_a_name_that_exists_in_the_directory_without_the_portal_is_refused_not_adopted(
    api_bob, auto_cluster, ldap_corner, eager_tasks, django_capture_on_commit_callbacks
):
    ldap_corner.add_foreign("carl", 31001)

    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob, username="carl")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["code"] == "name_taken"
    assert "not created for you by the portal" in response.json()["detail"]
    assert not ClusterAccessRequest.objects.exists()
    assert not ClusterAccount.objects.exists()
    entries = ldap_corner.entries()
    assert list(entries) == ["carl"] and not entries["carl"].get("description")
    assert ldap_corner.members() == []


def test_a_name_another_portal_user_has_is_refused(
    api_bob, alice, auto_cluster, ldap_corner, eager_tasks, django_capture_on_commit_callbacks
):
    ClusterAccount.objects.create(user=alice, cluster=auto_cluster, username="shared", uid=4001)

    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob, username="shared")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["code"] == "name_taken"
    assert "another portal user" in response.json()["detail"]
    assert not ClusterAccessRequest.objects.exists()
    assert ldap_corner.entries() == {}


def test_a_uid_below_1000_is_refused_with_a_400(api_bob, auto_cluster, ldap_corner):
    response = _ask(api_bob, uid=500)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "uid"
    assert "below 1000 are system accounts" in response.json()["detail"]
    assert not ClusterAccessRequest.objects.exists()
    assert ldap_corner.entries() == {}


def test_a_derived_name_that_clashes_gets_a_numeric_suffix(
    api_bob, alice, auto_cluster, ldap_corner, eager_tasks, django_capture_on_commit_callbacks
):
    ClusterAccount.objects.create(user=alice, cluster=auto_cluster, username="bob", uid=4002)
    ldap_corner.add_foreign("bob2", 31002)

    with django_capture_on_commit_callbacks(execute=True):
        response = _ask(api_bob)

    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["username"] == "bob3"
    assert ClusterAccessRequest.objects.get().state == State.PROVISIONED


def test_derived_names_are_unix_valid(db):
    user = factories.UserFactory(username="Zoë.O'Brien+x", email="3Zoë.O'Brien+gpu@uni.example")
    names = list(username_candidates(user))

    assert names[0] == "zoe-o-brien-gpu"
    assert names[1] == "zoe-o-brien-gpu2"
    assert len(set(names)) == len(names)


# --- revocation ------------------------------------------------------------------------------


def test_removing_a_member_from_the_project_removes_the_account_the_portal_made(
    api_bob,
    alice,
    bob,
    tenant,
    auto_cluster,
    ldap_corner,
    eager_tasks,
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        request_id = _ask(api_bob).json()["id"]
    assert list(ldap_corner.entries()) == ["bob"]
    mail.outbox.clear()

    member = ProjectMember.objects.get(project=tenant.project, user=bob)
    with django_capture_on_commit_callbacks(execute=True):
        project_member_remove(actor=alice, member=member)

    assert not ClusterAccount.objects.filter(user=bob).exists()
    request = ClusterAccessRequest.objects.get(uuid=request_id)
    assert request.state == State.REVOKED
    assert ldap_corner.entries() == {}
    assert ldap_corner.members() == []
    assert [m.to for m in mail.outbox] == [["bob@uni.example"]]


def test_an_account_the_portal_did_not_make_is_never_removed(
    alice, bob, tenant, auto_cluster, ldap_corner, eager_tasks, django_capture_on_commit_callbacks
):
    ClusterAccount.objects.create(user=bob, cluster=auto_cluster, username="bob", uid=4003)

    member = ProjectMember.objects.get(project=tenant.project, user=bob)
    with django_capture_on_commit_callbacks(execute=True):
        project_member_remove(actor=alice, member=member)

    assert ClusterAccount.objects.filter(user=bob).exists()


def test_a_member_still_in_another_project_on_the_cluster_keeps_the_account(
    api_bob,
    alice,
    bob,
    tenant,
    auto_cluster,
    ldap_corner,
    eager_tasks,
    django_capture_on_commit_callbacks,
):
    other = factories.ProjectFactory(organization=tenant.org, name="Other", slug="other")
    ProjectMember.objects.create(project=other, user=bob, role=ProjectMember.Role.MEMBER)
    factories.AllocationFactory(project=other, clusters=[auto_cluster])
    with django_capture_on_commit_callbacks(execute=True):
        _ask(api_bob)

    member = ProjectMember.objects.get(project=tenant.project, user=bob)
    with django_capture_on_commit_callbacks(execute=True):
        project_member_remove(actor=alice, member=member)

    assert ClusterAccount.objects.filter(user=bob).exists()
    assert list(ldap_corner.entries()) == ["bob"]


# --- web and dashboard -----------------------------------------------------------------------


def test_the_access_page_asks_for_access_and_the_dashboard_shows_the_state(
    client, bob, tenant, approval_cluster, ldap_corner
):
    client.force_login(bob)

    page = client.get("/access/")
    posted = client.post(
        "/access/", {"project": str(tenant.project.uuid), "cluster": "sim", "username": ""}
    )
    dashboard = client.get("/")

    assert page.status_code == HTTPStatus.OK
    assert "Request access" in page.content.decode()
    assert posted.status_code == HTTPStatus.FOUND
    assert ClusterAccessRequest.objects.get(user=bob).state == State.PENDING
    assert dashboard.status_code == HTTPStatus.OK
    text = dashboard.content.decode()
    assert 'id="cluster-access"' in text
    assert "Waiting for staff" in text


def test_the_access_page_shows_a_bad_name_next_to_the_field(
    client, bob, tenant, approval_cluster, ldap_corner
):
    client.force_login(bob)

    response = client.post(
        "/access/", {"project": str(tenant.project.uuid), "cluster": "sim", "username": "a;b"}
    )

    assert response.status_code == HTTPStatus.OK
    assert "not allowed" in response.content.decode()
    assert not ClusterAccessRequest.objects.exists()


def test_the_dashboard_shows_a_rejection_with_its_reason(
    client, bob, frank, approval_cluster, ldap_corner
):
    request_id = _ask(_api_client(bob)).json()["id"]
    _api_client(frank).post(f"{URL}{request_id}/reject/", {"reason": "No GPUs left"}, format="json")
    client.force_login(bob)

    text = client.get("/").content.decode()

    assert "Rejected" in text
    assert "No GPUs left" in text


# --- provisioning: retries, outages, compensation --------------------------------------------


def _approved(api_bob, api_frank, django_capture_on_commit_callbacks) -> ClusterAccessRequest:
    """bob's request, approved by staff, its provisioning task not run yet."""
    request_id = _ask(api_bob).json()["id"]
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert api_frank.post(f"{URL}{request_id}/approve/").status_code == HTTPStatus.OK
    assert len(queued) == 1  # the provisioning task, queued for after the commit
    return ClusterAccessRequest.objects.get(uuid=request_id)


def test_a_retry_after_a_crash_finds_the_identity_it_made_and_succeeds(
    api_bob, api_frank, bob, approval_cluster, ldap_corner, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.provisioning import Identity, get_provisioner
    from jobs.services import STALE_CLAIM
    from jobs.tasks import cluster_access_provision_task

    request = _approved(api_bob, api_frank, django_capture_on_commit_callbacks)
    # A worker claimed it, made the entry, and died before recording the account.
    made = get_provisioner(approval_cluster).create(
        Identity(username=request.username, key=request.uuid.hex)
    )
    ClusterAccessRequest.objects.filter(pk=request.pk).update(
        state=State.PROVISIONING, claimed_at=timezone.now() - STALE_CLAIM - timedelta(seconds=1)
    )

    result = cluster_access_provision_task.apply(args=[request.pk])

    assert result.get() == State.PROVISIONED
    request.refresh_from_db()
    assert request.state == State.PROVISIONED
    assert ClusterAccount.objects.get(user=bob).uid == made.uid
    assert list(ldap_corner.entries()) == ["bob"]


def test_a_fresh_claim_is_left_to_its_worker(
    api_bob, api_frank, approval_cluster, ldap_corner, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    from jobs.services import access_request_provision

    request = _approved(api_bob, api_frank, django_capture_on_commit_callbacks)
    ClusterAccessRequest.objects.filter(pk=request.pk).update(
        state=State.PROVISIONING, claimed_at=timezone.now()
    )

    assert access_request_provision(request_id=request.pk).state == State.PROVISIONING
    assert ldap_corner.entries() == {}


def test_a_directory_outage_releases_the_claim_for_a_retry_and_writes_nothing(
    api_bob, api_frank, bob, approval_cluster, ldap_corner, django_capture_on_commit_callbacks
):
    from jobs.provisioning import ProvisionUnavailable
    from jobs.services import access_request_provision

    request = _approved(api_bob, api_frank, django_capture_on_commit_callbacks)
    good = approval_cluster.options["provisioner_options"]
    approval_cluster.options["provisioner_options"] = {
        **good,
        "url": "ldap://127.0.0.1:1",
        "timeout": 2,
    }
    approval_cluster.save()

    with pytest.raises(ProvisionUnavailable):
        access_request_provision(request_id=request.pk)

    request.refresh_from_db()
    assert request.state == State.APPROVED
    assert not ClusterAccount.objects.exists()
    approval_cluster.options["provisioner_options"] = good
    approval_cluster.save()
    assert access_request_provision(request_id=request.pk).state == State.PROVISIONED
    assert list(ldap_corner.entries()) == ["bob"]


def test_an_account_recorded_meanwhile_undoes_the_identity_just_made(
    api_bob,
    api_frank,
    bob,
    approval_cluster,
    ldap_corner,
    django_capture_on_commit_callbacks,
):
    from jobs.services import access_request_provision

    request = _approved(api_bob, api_frank, django_capture_on_commit_callbacks)
    ClusterAccount.objects.create(user=bob, cluster=approval_cluster, username="bob-old", uid=4100)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        result = access_request_provision(request_id=request.pk)

    assert result.state == State.FAILED
    assert "was removed" in result.reason
    assert ldap_corner.entries() == {}
    assert ldap_corner.members() == []
    assert ClusterAccount.objects.get(user=bob).username == "bob-old"
    assert [m.to for m in mail.outbox] == [["bob@uni.example"]]
    assert "could not be created" in mail.outbox[0].subject


def test_a_name_taken_in_the_directory_after_the_request_fails_it_without_adopting(
    api_bob,
    api_frank,
    frank,
    client,
    approval_cluster,
    ldap_corner,
    django_capture_on_commit_callbacks,
):
    from jobs.services import access_request_provision

    request = _approved(api_bob, api_frank, django_capture_on_commit_callbacks)
    ldap_corner.add_foreign("bob", 31003)

    result = access_request_provision(request_id=request.pk)

    assert result.state == State.FAILED
    assert "The name is taken" in result.reason
    assert not ClusterAccount.objects.exists()
    client.force_login(frank)
    staff_page = client.get("/manage/access/")
    assert staff_page.status_code == HTTPStatus.OK
    assert "The name is taken" in staff_page.content.decode()
    entries = ldap_corner.entries()
    assert list(entries) == ["bob"] and not entries["bob"].get("description")


def test_the_submit_form_offers_to_request_access_when_the_account_is_missing(
    client, bob, tenant, auto_cluster
):
    client.force_login(bob)
    form = {
        "project": str(tenant.project.uuid),
        "cluster": "sim",
        "name": "web-job",
        "script": "echo web\n",
        "gpus": "0",
        "cpus": "1",
        "memory_mb": "1024",
        "time_limit_minutes": "30",
    }

    response = client.post("/jobs/new/", form)

    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert "You have no account on cluster sim yet" in page
    assert "Request access to sim" in page
    assert f"/access/?cluster=sim&amp;project={tenant.project.uuid}" in page
