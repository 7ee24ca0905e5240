"""The real single-node Slurm clusters of deploy/slurm (their env files), a priced Slurm
cluster with an allocation for alice's project, cluster accounts for the test users, and
helpers to drive the portal's sync until jobs end.

Two clusters: Slurm 22.05 (`up.sh`, slurmrestd v0.0.38) and Slurm 24.11 (`up.sh --version
24.11`, v0.0.40 to v0.0.42). `slurm_site` is the 22.05 one unless a test is parametrized over
both with `@both_slurms` (ids "22.05" and "24.11") or GPUC_SLURM_VERSION names the other (to
run every Slurm test on it). Outside CI these tests skip with a message when a cluster's
slurmrestd does not answer; in CI (CI set) they fail instead: run `make slurm-up` first.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from accounts.models import User
from jobs.backends import get_backend
from jobs.backends.slurm import SlurmBackend, records
from jobs.backends.slurm.rest import SlurmRest
from jobs.backends.slurm.versions import VERSIONS, ApiVersion
from jobs.models import ClusterAccount, Job
from jobs.services import cluster_sync
from quotas.models import Allocation, Cluster, Rate
from quotas.services import ledger_credit
from tests import factories
from tests.conftest import CI_ACCEPTED_SKIP, Tenant

ENV_FILES = {
    "22.05": Path(os.environ.get("GPUC_SLURM_ENV", "/var/lib/gpucommons-slurm/env")),
    "24.11": Path(os.environ.get("GPUC_SLURM_2411_ENV", "/var/lib/gpucommons-slurm-24.11/env")),
}
SLURM_VERSIONS = tuple(ENV_FILES)
# Parametrizes a test over both clusters (slurm_site and everything built on it).
both_slurms = pytest.mark.parametrize("slurm_site", SLURM_VERSIONS, indirect=True)
ALICE_UNIX = "gpuc-test1"
BOB_UNIX = "gpuc-test2"
# 1 SU per CPU-second and 2 SU per h100-second: a charge reads as seconds of use.
CPU_SU_PER_HOUR = Decimal(3600)
GPU_SU_PER_HOUR = Decimal(7200)


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the Slurm tests: start deploy/slurm/up.sh)")
    pytest.skip(f"{message}; start it with deploy/slurm/up.sh to run the Slurm tests")


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


@dataclass(frozen=True)
class SlurmSite:
    """What deploy/slurm/up.sh wrote to a cluster's env file."""

    version: str
    url: str
    jwt_key_file: str
    shared_root: str
    partition: str
    gpu_types: list[str]
    account: str
    conf: str
    bin: str
    # The newest API its slurmrestd serves, as up.sh says (the tests' own raw calls use it;
    # the backend negotiates on its own).
    api: ApiVersion

    @property
    def sbin(self) -> str:
        return str(Path(self.bin).parent / "sbin")

    def command(self, name: str) -> list[str]:
        """argv of one of this cluster's commands (sacct, sacctmgr, ...)."""
        return [f"{self.bin}/{name}"]

    def command_env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": self.conf}

    cluster_name: str = "gpucommons"  # slurm.conf's ClusterName (slurmdbd's cluster)

    def options(self, **extra: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "url": self.url,
            "jwt_key_file": self.jwt_key_file,
            "shared_root": self.shared_root,
            "partition": self.partition,
            "account": self.account,
            "gpu_types": self.gpu_types,
            "max_gpus": 4,
            "max_cpus": 2,
            "max_memory_mb": 8192,
            "max_time_minutes": 1440,
            "connect_timeout": 2,
            "read_timeout": 20,
        }
        options.update(extra)
        return options

    def rest(self) -> SlurmRest:
        """A client of its own (not the backend's), for the tests' independent checks."""
        return SlurmRest(cluster="check", url=self.url, jwt_key_file=self.jwt_key_file)


@pytest.fixture(scope="session")
def slurm_site(request: pytest.FixtureRequest) -> SlurmSite:
    version = getattr(request, "param", None) or os.environ.get("GPUC_SLURM_VERSION", "22.05")
    env_file = ENV_FILES[version]
    up = "deploy/slurm/up.sh" + ("" if version == "22.05" else f" --version {version}")
    if not env_file.is_file():
        _unavailable(f"No env file of the Slurm {version} cluster at {env_file} ({up})")
    env = read_env_file(env_file)
    api_version = env.get("SLURM_REST_API_VERSION", "v0.0.38")
    site = SlurmSite(
        version=version,
        url=env["SLURM_REST_URL"],
        jwt_key_file=env["SLURM_JWT_KEY_FILE"],
        shared_root=env["SLURM_SHARED_ROOT"],
        partition=env.get("SLURM_PARTITION", ""),
        gpu_types=[t for t in env.get("SLURM_GPU_TYPES", "").split(",") if t],
        account=env.get("SLURM_ACCOUNT", ""),
        conf=env.get("SLURM_CONF", "/etc/slurm/slurm.conf"),
        bin=env.get("SLURM_BIN", "/usr/bin"),
        api=VERSIONS[api_version],
        cluster_name=env.get("SLURM_CLUSTER_NAME", "gpucommons"),
    )
    try:
        body = site.rest().call("GET", site.api.ctld("/ping"), user=ALICE_UNIX) or {}
    except Exception as exc:
        _unavailable(f"slurmrestd of Slurm {version} at {site.url} does not answer ({exc})")
    ping = (body.get("pings") or [{}])[0]
    if "UP" not in (ping.get("ping"), ping.get("pinged")):  # v0.0.38 says "ping"
        _unavailable(f"slurmctld of Slurm {version} behind {site.url} is not up: {body}")
    return site


@pytest.fixture
def slurm_cluster(db: None, slurm_site: SlurmSite) -> Cluster:
    """The real cluster, priced at 3600 SU per CPU-hour and 7200 SU per h100-hour (no memory
    rate), so a 1-CPU job costs its seconds and each GPU adds 2 SU per second."""
    cluster = factories.ClusterFactory(
        name="slurm", kind=Cluster.Kind.SLURM, options=slurm_site.options()
    )
    factories.RateFactory(
        cluster=cluster, resource=Rate.Resource.CPU_HOUR, su_per_unit=CPU_SU_PER_HOUR
    )
    for gpu_type in slurm_site.gpu_types:
        factories.RateFactory(
            cluster=cluster,
            resource=Rate.Resource.GPU_HOUR,
            gpu_type=gpu_type,
            su_per_unit=GPU_SU_PER_HOUR,
        )
    return cluster


def _uid(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        _unavailable(f"Unix user {name} does not exist")
        raise


@pytest.fixture
def slurm_allocation(tenant: Tenant, slurm_cluster: Cluster, alice: User, bob: User) -> Allocation:
    """100,000 SU for alice's project on the Slurm cluster; alice runs as gpuc-test1, bob as
    gpuc-test2 (Unix users deploy/slurm/up.sh creates)."""
    allocation = factories.AllocationFactory(project=tenant.project, clusters=[slurm_cluster])
    ledger_credit(
        actor=None, allocation=allocation, amount=Decimal(100_000), key=f"slurm-{allocation.pk}"
    )
    ClusterAccount.objects.create(
        user=alice, cluster=slurm_cluster, username=ALICE_UNIX, uid=_uid(ALICE_UNIX)
    )
    ClusterAccount.objects.create(
        user=bob, cluster=slurm_cluster, username=BOB_UNIX, uid=_uid(BOB_UNIX)
    )
    allocation.refresh_from_db()
    return allocation


@pytest.fixture
def slurm_backend(slurm_cluster: Cluster) -> SlurmBackend:
    """The very backend instance the portal services use for the cluster."""
    backend = get_backend(slurm_cluster)
    assert isinstance(backend, SlurmBackend)
    return backend


def sync_until(
    cluster: Cluster,
    jobs: list[Job],
    done: Callable[[Job], bool] = lambda job: job.finalized_at is not None,
    *,
    timeout: float = 120,
    interval: float = 0.5,
) -> None:
    """Run the portal's cluster sync (one poll for all jobs per tick) until every job is
    `done` (default: finalised, i.e. charged), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        cluster_sync(cluster=cluster)
        for job in jobs:
            job.refresh_from_db()
        if all(done(job) for job in jobs):
            return
        if time.monotonic() > deadline:
            states = {str(job.uuid): (job.state, job.state_reason) for job in jobs}
            pytest.fail(f"jobs not done after {timeout} s: {states}")
        time.sleep(interval)


def slurm_jobs_tagged(site: SlurmSite, job_uuid: uuid.UUID) -> list[dict[str, Any]]:
    """Every Slurm job (slurmctld's list) whose comment carries the portal job's uuid."""
    body = site.rest().call("GET", site.api.ctld("/jobs"), user=ALICE_UNIX) or {}
    return [j for j in body.get("jobs", []) if j.get("comment") == f"gpuc:{job_uuid}"]


def slurm_number(value: Any) -> int | None:
    """A number of a raw record, whatever the version's shape (5 or {"set", "number": 5})."""
    return records.number(value)


def sacct_field(site: SlurmSite, job_id: str, field: str) -> str:
    """One accounting field of a job as that cluster's `sacct` prints it (an independent look
    at its slurmdbd)."""
    result = subprocess.run(  # noqa: S603 (argv list of fixed words and a numeric id)
        [*site.command("sacct"), "-X", "-n", "-P", "-j", job_id, "-o", field],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=site.command_env(),
    )
    return result.stdout.strip()


# --- a slurmrestd of the test's own, run the way deploy/slurm/up.sh runs the shared one ------
#
# The outage test stops and restarts slurmrestd. Doing that to the shared daemon would break
# any other run of the Slurm tests (or a demo) at that moment, so the test starts a second
# slurmrestd on a free port with up.sh's command line (an unprivileged user, SLURM_JWT=daemon,
# the same plugins) and stops only that one.

REST_USER = os.environ.get("GPUC_SLURM_REST_USER", "slurmrest")
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/openapi/v3", timeout=2)
    except requests.RequestException:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateSlurmrestd:
    """slurmrestd on 127.0.0.1:<free port>, started and stopped by the test."""

    def __init__(self, slurmrestd: str, slurm_conf: str, log: Path, plugins: str) -> None:
        self.slurmrestd = slurmrestd
        self.plugins = plugins
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.slurm_conf = slurm_conf
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [self.slurmrestd, "-s", self.plugins, "-a", "rest_auth/jwt"]
        argv.append(f"127.0.0.1:{self.port}")
        if os.geteuid() == 0:  # slurmrestd refuses to run as root
            argv = [SETPRIV, f"--reuid={REST_USER}", f"--regid={REST_USER}", "--init-groups", *argv]
        env = {**os.environ, "SLURM_CONF": self.slurm_conf, "SLURM_JWT": "daemon"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (fixed argv)
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while not _answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"private slurmrestd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
        assert not _answers(self.url), "slurmrestd still answers after it was stopped"


def _private_slurmrestd(
    site: SlurmSite, tmp_path: Path, plugins: str
) -> Iterator[PrivateSlurmrestd]:
    daemon = PrivateSlurmrestd(
        f"{site.sbin}/slurmrestd", site.conf, tmp_path / "slurmrestd.log", plugins
    )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(REST_USER)
        except KeyError:
            _unavailable(f"No user {REST_USER} to run a private slurmrestd as")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def private_slurmrestd(slurm_site: SlurmSite, tmp_path: Path) -> Iterator[PrivateSlurmrestd]:
    """A slurmrestd of the test's own (both APIs), to stop and start at will."""
    yield from _private_slurmrestd(slurm_site, tmp_path, slurm_site.api.plugins)


@pytest.fixture
def slurmrestd_without_accounting(
    slurm_site: SlurmSite, tmp_path: Path
) -> Iterator[PrivateSlurmrestd]:
    """A slurmrestd serving only the slurmctld API: as if slurmdbd were unreachable."""
    ctld_plugin = slurm_site.api.plugins.split(",")[0]  # openapi/v0.0.38 or openapi/slurmctld
    yield from _private_slurmrestd(slurm_site, tmp_path, ctld_plugin)


# --- project accounts (the portal manages slurmdbd accounts and limits) ----------------------

RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@pytest.fixture
def managed_cluster(slurm_cluster: Cluster, slurm_site: SlurmSite) -> Iterator[Cluster]:
    """The real cluster with manage_accounts on and an account prefix of this test's own, so
    every test starts from accounts slurmdbd has never seen; they are removed afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}x"
    slurm_cluster.options = {
        **slurm_cluster.options,
        "manage_accounts": True,
        "slurm_cluster": slurm_site.cluster_name,
        "account_prefix": prefix,
    }
    slurm_cluster.save(update_fields=["options"])
    yield slurm_cluster
    _drop_accounts(slurm_site, prefix)


def _drop_accounts(site: SlurmSite, prefix: str) -> None:
    rest = site.rest()
    body = rest.call("GET", site.api.dbd("/accounts"), user="slurm") or {}
    names = [a["name"] for a in body.get("accounts", []) if a.get("name", "").startswith(prefix)]
    for name in names:
        subprocess.run(  # noqa: S603 (fixed argv, a generated account name)
            [*site.command("scancel"), f"--account={name}"],
            capture_output=True,
            timeout=30,
            env=site.command_env(),
        )
    if names:
        time.sleep(1)
        rest.call(
            "DELETE",
            site.api.dbd("/associations"),
            user="slurm",
            params={"cluster": site.cluster_name, "account": site.api.list_param(names)},
            ok_errnos=frozenset({-1}),
        )
    for name in names:
        rest.call(
            "DELETE", site.api.dbd(f"/account/{name}"), user="slurm", ok_errnos=frozenset({-1})
        )


def refusing_slurm(site: SlurmSite) -> None:
    """Skip on a slurmdbd that refuses nothing the portal sends per account: 24.11 silently
    drops an unknown GRES from GrpTRES and accepts unknown users, so the refusal tests (which
    push a GPU cap on a misnamed gpu_tres) run on 22.05, whose slurmdbd refuses it."""
    if site.version != "22.05":
        pytest.skip(
            f"{CI_ACCEPTED_SKIP}slurmdbd {site.version} refuses no per-account push "
            "(unknown GRES dropped)"
        )


def project_allocation(
    project: Any, cluster: Cluster, su: Decimal | int, users: dict[User, str]
) -> Allocation:
    """An allocation of `su` SU for `project` on `cluster`, and cluster accounts for `users`
    ({portal user: Unix user})."""
    allocation = factories.AllocationFactory(project=project, clusters=[cluster])
    if su:
        ledger_credit(
            actor=None, allocation=allocation, amount=Decimal(su), key=f"pa-{allocation.pk}"
        )
    for user, unix in users.items():
        ClusterAccount.objects.get_or_create(
            user=user, cluster=cluster, defaults={"username": unix, "uid": _uid(unix)}
        )
    allocation.refresh_from_db()
    return allocation


def sbatch(
    site: SlurmSite,
    unix_user: str,
    account: str,
    *,
    minutes: int = 1,
    gpus: int = 0,
    seconds: int = 1,
) -> str:
    """That cluster's real sbatch CLI run as `unix_user` under `account` (argv list, no shell):
    a job id."""
    argv = [
        RUNUSER,
        "-u",
        unix_user,
        "--",
        *site.command("sbatch"),
        "--parsable",
        f"--account={account}",
        "--partition=gpu",
        f"--time={minutes}",
        "--cpus-per-task=1",
        "--mem=64",
        "--chdir=/tmp",
        "--output=/dev/null",
        f"--wrap=sleep {seconds}",
    ]
    if gpus:
        argv.insert(-1, f"--gres=gpu:{gpus}")
    result = subprocess.run(  # noqa: S603 (argv list)
        argv, capture_output=True, text=True, timeout=30, env=site.command_env()
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def squeue_state(site: SlurmSite, job_id: str) -> tuple[str, str]:
    """(state, reason) of a job as that cluster's squeue prints them; ("", "") once slurmctld
    forgot it."""
    result = subprocess.run(  # noqa: S603 (fixed argv and a numeric id)
        [*site.command("squeue"), "-h", "-j", job_id, "-o", "%T|%r"],
        capture_output=True,
        text=True,
        timeout=30,
        env=site.command_env(),
    )
    state, _, reason = result.stdout.strip().partition("|")
    return state, reason


def slurm_associations(site: SlurmSite, account: str) -> list[dict[str, Any]]:
    """The associations slurmdbd holds for `account` (read with the test's own client)."""
    body = site.rest().call(
        "GET",
        site.api.dbd("/associations"),
        user="slurm",
        params={"cluster": site.cluster_name, "account": account},
    )
    return [a for a in (body or {}).get("associations", []) if a.get("account") == account]


ENFORCING = {
    "AccountingStorageEnforce": ("limits", "safe"),
    "PriorityType": ("priority/multifactor",),
    "PriorityDecayHalfLife": ("00:00:00",),
    "PriorityUsageResetPeriod": ("NONE",),
}


@pytest.fixture(scope="session")
def enforcing_slurm(slurm_site: SlurmSite) -> SlurmSite:
    """The cluster configured so pushed association limits are hard (deploy/slurm/up.sh's
    slurm.conf: limits,safe enforcement, usage that never decays, billing weights = rates)."""
    result = subprocess.run(  # noqa: S603 (fixed argv)
        [*slurm_site.command("scontrol"), "show", "config"],
        capture_output=True,
        text=True,
        timeout=30,
        env=slurm_site.command_env(),
    )
    config = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip()
    for key, needed in ENFORCING.items():
        if not all(word in config.get(key, "") for word in needed):
            _unavailable(
                f"slurmctld runs with {key}={config.get(key)!r}, not {'+'.join(needed)} "
                "(re-run deploy/slurm/up.sh from a tree with the push-down slurm.conf)"
            )
    return slurm_site
