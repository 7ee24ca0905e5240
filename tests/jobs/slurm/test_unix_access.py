"""The unix provisioner on the real dev cluster: a member asks for access, the portal creates
the Unix user through deploy/slurm/provision-user (installed as
/usr/local/sbin/gpuc-provision-user), and the real Slurm then runs the member's job as that
new user. Bad names and uids are refused and nothing is left on the host.

The Slurm association of the new user (slurm.conf enforces associations) is made here with
sacctmgr, standing in for the per-project scheduler accounts of issue 11."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path

import pytest

from accounts.models import Membership, ProjectMember, User
from jobs.backends.base import BackendUnavailable
from jobs.models import ClusterAccessRequest, ClusterAccount, Job, SchedulerAccount
from jobs.provisioning import Identity, NameTaken, get_provisioner
from jobs.services import job_forward
from portal.celery import app as celery_app
from quotas.models import Cluster
from quotas.services import ledger_credit
from tests import factories
from tests.conftest import Tenant, _api_client
from tests.jobs.slurm.conftest import ALICE_UNIX, SlurmSite, sacct_field, sync_until

pytestmark = pytest.mark.slurm
HELPER = Path("/usr/local/sbin/gpuc-provision-user")
SACCTMGR = shutil.which("sacctmgr") or "/usr/bin/sacctmgr"
SCONTROL = shutil.which("scontrol") or "/usr/bin/scontrol"
SCANCEL = shutil.which("scancel") or "/usr/bin/scancel"
State = ClusterAccessRequest.State


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _sacctmgr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (fixed argv: sacctmgr and checked names)
        [SACCTMGR, "-i", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _associate(name: str, account: str) -> None:
    """Give the new user a Slurm association and wait until slurmctld knows it (slurmdbd
    pushes it there asynchronously)."""
    added = _sacctmgr("add", "user", name, f"account={account}")
    assert added.returncode == 0, added.stderr
    deadline = time.monotonic() + 60
    while True:
        shown = subprocess.run(  # noqa: S603 (fixed argv and a checked name)
            [SCONTROL, "show", "assoc_mgr", f"users={name}", "flags=assoc"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if f"UserName={name}(" in shown.stdout:
            return
        assert time.monotonic() < deadline, f"slurmctld never learnt the association of {name}"
        time.sleep(0.5)


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    conf = celery_app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager, conf.task_eager_propagates = True, True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


@pytest.fixture
def unix_cluster(slurm_cluster: Cluster, tenant: Tenant) -> Cluster:
    """The real Slurm cluster, accounts by the unix provisioner, approved automatically for
    alice's project (100,000 SU on it)."""
    if os.geteuid() != 0 or not HELPER.exists():
        if os.environ.get("CI"):
            pytest.fail(
                "needs root and the helper deploy/slurm/up.sh installs"
                + " (CI runs as root after deploy/slurm/up.sh)"
            )
        pytest.skip("needs root and the helper deploy/slurm/up.sh installs")
    slurm_cluster.options = {
        **slurm_cluster.options,
        "access_policy": "auto",
        "provisioner": "unix",
    }
    slurm_cluster.save()
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[slurm_cluster])
    ledger_credit(
        actor=None, allocation=allocation, amount=Decimal(100_000), key=f"unix-{allocation.pk}"
    )
    return slurm_cluster


@pytest.fixture
def newcomer(tenant: Tenant) -> Iterator[User]:
    """A fresh member of alice's project whose derived Unix name exists nowhere yet; whatever
    the test provisions for them is removed afterwards (through the provisioner)."""
    tag = uuid.uuid4().hex[:8]
    user = factories.UserFactory(username=f"newcomer{tag}", email=f"gpuci{tag}@uni.example")
    Membership.objects.create(organization=tenant.org, user=user, role=Membership.Role.MEMBER)
    ProjectMember.objects.create(project=tenant.project, user=user)
    yield user
    for account in ClusterAccount.objects.filter(user=user).exclude(provision_key=""):
        provisioner = get_provisioner(account.cluster)
        assert provisioner is not None
        subprocess.run(  # noqa: S603 (fixed argv and a checked name)
            [SCANCEL, "-u", account.username], capture_output=True, timeout=30, check=False
        )
        _sacctmgr("delete", "user", account.username)
        provisioner.remove(Identity(username=account.username, key=account.provision_key))
        assert not _exists(account.username)
        # A folder with the user's data stays after removal, but only root may read it
        # (whoever gets the uid number next must not); the test's own data goes.
        folder = Path(account.cluster.options["shared_root"]) / account.username
        if folder.exists():
            assert (folder.stat().st_uid, folder.stat().st_mode & 0o777) == (0, 0o700)
            shutil.rmtree(folder)


def test_a_provisioned_unix_user_runs_a_job_on_the_real_slurm(
    unix_cluster: Cluster,
    newcomer: User,
    slurm_site: SlurmSite,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
):
    api = _api_client(newcomer)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/cluster-access-requests/",
            {"project": "folding", "cluster": "slurm"},
            format="json",
        )

    assert response.status_code == HTTPStatus.CREATED, response.json()
    request = ClusterAccessRequest.objects.get(uuid=response.json()["id"])
    assert request.state == State.PROVISIONED, request.reason
    account = ClusterAccount.objects.get(user=newcomer, cluster=unix_cluster)
    name = account.username
    assert name == newcomer.email.partition("@")[0]
    entry = pwd.getpwnam(name)
    assert entry.pw_uid == account.uid >= 1000
    assert entry.pw_gecos == f"gpuc-{request.uuid.hex}"
    folder = Path(slurm_site.shared_root) / name
    assert folder.is_dir() and folder.stat().st_uid == entry.pw_uid
    assert grp.getgrgid(folder.stat().st_gid).gr_name == name

    _associate(name, slurm_site.account)
    submitted = api.post(
        "/api/v1/jobs/",
        {
            "project": "folding",
            "cluster": "slurm",
            "name": "first-job",
            "script": 'echo "I am $(id -un) ($(id -u))"\n',
            "cpus": 1,
            "memory_mb": 128,
            "time_limit_minutes": 2,
        },
        format="json",
    )
    assert submitted.status_code == HTTPStatus.CREATED, submitted.json()
    job = Job.objects.get(uuid=submitted.json()["id"])
    job_forward(job_id=job.pk)
    sync_until(unix_cluster, [job])

    assert job.state == Job.State.COMPLETED, job.state_reason
    assert job.cluster_username == name
    assert sacct_field(slurm_site, job.backend_id, "User") == name
    log = api.get(f"/api/v1/jobs/{job.uuid}/log/").json()
    assert log["data"] == f"I am {name} ({account.uid})\n"


def test_on_a_managed_cluster_a_new_member_submits_at_once_and_the_job_waits_for_the_account(
    managed_cluster: Cluster,
    unix_cluster: Cluster,
    newcomer: User,
    slurm_site: SlurmSite,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
):
    """No sacctmgr here: provisioning itself pushes the project's Slurm account with the new
    user at once, and a job submitted the moment access is granted waits (pending in the
    portal, retried) until slurmctld has learnt the association, instead of being rejected."""
    api = _api_client(newcomer)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/cluster-access-requests/",
            {"project": "folding", "cluster": "slurm"},
            format="json",
        )
    request = ClusterAccessRequest.objects.get(uuid=response.json()["id"])
    assert request.state == State.PROVISIONED, request.reason
    name = ClusterAccount.objects.get(user=newcomer, cluster=unix_cluster).username
    pushed = SchedulerAccount.objects.get(project__slug="folding", cluster=unix_cluster)
    assert name in pushed.pushed_users  # pushed when provisioning committed, not a tick later

    submitted = api.post(
        "/api/v1/jobs/",
        {
            "project": "folding",
            "cluster": "slurm",
            "name": "at-once",
            "script": "id -un\n",
            "cpus": 1,
            "memory_mb": 128,
            "time_limit_minutes": 2,
        },
        format="json",
    )
    assert submitted.status_code == HTTPStatus.CREATED, submitted.json()
    job = Job.objects.get(uuid=submitted.json()["id"])
    deadline = time.monotonic() + 60
    while True:  # what forward_job_task's retries do
        try:
            job_forward(job_id=job.pk)
            break
        except BackendUnavailable as exc:
            assert str(exc).startswith("Waiting for the cluster account"), exc
            assert time.monotonic() < deadline, "slurmctld never learnt the new association"
            time.sleep(0.5)
    sync_until(unix_cluster, [job])

    assert job.state == Job.State.COMPLETED, job.state_reason
    assert sacct_field(slurm_site, job.backend_id, "User") == name
    assert sacct_field(slurm_site, job.backend_id, "Account") == pushed.name


def test_a_name_that_exists_on_the_host_without_the_portal_is_refused_and_left_alone(
    unix_cluster: Cluster, newcomer: User, eager_tasks: None, django_capture_on_commit_callbacks
):
    before = pwd.getpwnam(ALICE_UNIX)

    with django_capture_on_commit_callbacks(execute=True):
        response = _api_client(newcomer).post(
            "/api/v1/cluster-access-requests/",
            {"project": "folding", "cluster": "slurm", "username": ALICE_UNIX},
            format="json",
        )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["code"] == "name_taken"
    assert "was not created for you by the portal" in response.json()["detail"]
    assert not ClusterAccessRequest.objects.exists()
    assert pwd.getpwnam(ALICE_UNIX) == before


@pytest.mark.parametrize("name", ["x;touch /tmp/pwned", "$(id)", "a b", "../etc", "root"])
def test_bad_names_get_a_400_and_nothing_reaches_the_host(
    unix_cluster: Cluster, newcomer: User, name: str
):
    response = _api_client(newcomer).post(
        "/api/v1/cluster-access-requests/",
        {"project": "folding", "cluster": "slurm", "username": name},
        format="json",
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "username"
    assert not ClusterAccessRequest.objects.exists()
    assert not Path("/tmp/pwned").exists()


def test_a_uid_below_1000_is_refused(unix_cluster: Cluster, newcomer: User):
    response = _api_client(newcomer).post(
        "/api/v1/cluster-access-requests/",
        {"project": "folding", "cluster": "slurm", "uid": 999},
        format="json",
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["field"] == "uid"
    assert not ClusterAccessRequest.objects.exists()


def test_a_uid_that_belongs_to_someone_else_fails_and_leaves_nothing_on_the_host(
    unix_cluster: Cluster,
    newcomer: User,
    slurm_site: SlurmSite,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
):
    taken = pwd.getpwnam(ALICE_UNIX).pw_uid

    with django_capture_on_commit_callbacks(execute=True):
        response = _api_client(newcomer).post(
            "/api/v1/cluster-access-requests/",
            {"project": "folding", "cluster": "slurm", "uid": taken},
            format="json",
        )

    assert response.status_code == HTTPStatus.CREATED
    request = ClusterAccessRequest.objects.get(uuid=response.json()["id"])
    assert request.state == State.FAILED
    assert f"uid {taken} belongs to another user" in request.reason
    assert not ClusterAccount.objects.filter(user=newcomer).exists()
    assert not _exists(request.username)
    assert not (Path(slurm_site.shared_root) / request.username).exists()


def test_the_unix_provisioner_retries_idempotently_and_never_removes_foreign_users(
    unix_cluster: Cluster, slurm_site: SlurmSite
):
    provisioner = get_provisioner(unix_cluster)
    assert provisioner is not None
    identity = Identity(username=f"gpuci{uuid.uuid4().hex[:8]}", key=uuid.uuid4().hex)
    try:
        first = provisioner.create(identity)
        again = provisioner.create(identity)
        with pytest.raises(NameTaken):
            provisioner.create(Identity(username=identity.username, key=uuid.uuid4().hex))
        with pytest.raises(NameTaken):
            provisioner.remove(Identity(username=ALICE_UNIX, key=identity.key))
    finally:
        provisioner.remove(identity)

    assert again == first and first.uid >= 1000
    assert _exists(ALICE_UNIX)
    assert not _exists(identity.username)
    assert not (Path(slurm_site.shared_root) / identity.username).exists()
