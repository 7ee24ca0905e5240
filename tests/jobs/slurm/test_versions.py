"""slurmrestd API versions: the translation tables of each version, the record readers that
accept every version's records, and version negotiation against a local slurmrestd
(tests/slurmrestd_server.py) answering like 22.05, 23.11, 24.11, 25.05 and like a release the
portal cannot speak to, including the system check's errors."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.backends.base import BackendUnavailable, JobRef, JobSpec
from jobs.backends.slurm import SlurmBackend, records, versions
from jobs.backends.slurm.rest import PathNotFound
from jobs.backends.slurm.versions import VERSIONS, UnsupportedVersion
from portal.checks import check_cluster_backends
from quotas.models import Cluster
from tests import factories
from tests.slurmrestd_server import FakeSlurmrestd

# The OpenAPI versions each Slurm release's slurmrestd serves (with its default plugins).
RELEASES = {
    "22.05": ("v0.0.36", "v0.0.37", "v0.0.38"),
    "23.11": ("v0.0.39", "v0.0.40"),
    "24.11": ("v0.0.40", "v0.0.41", "v0.0.42"),
    "25.05": ("v0.0.41", "v0.0.42", "v0.0.43"),
}
NEUTRAL_JOB = {
    "name": "train",
    "comment": "gpuc:x",
    "time_limit": 7,
    "memory_per_node": 512,
    "environment": {"PATH": "/bin", "A": "1=2"},
    "gpus": ("h100", 2),
}


# --- the tables ---------------------------------------------------------------------------------


def test_v0_0_38_submits_plain_numbers_an_environment_object_and_gres():
    body = VERSIONS["v0.0.38"].submit_body("#!/bin/bash\n", NEUTRAL_JOB)

    assert body["script"] == "#!/bin/bash\n"
    job = body["job"]
    assert (job["time_limit"], job["memory_per_node"]) == (7, 512)
    assert job["environment"] == {"PATH": "/bin", "A": "1=2"}
    assert job["gres"] == "gpu:h100:2"
    assert "tres_per_node" not in job and "gpus" not in job and "script" not in job


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41", "v0.0.42"])
def test_later_versions_submit_number_objects_an_environment_list_and_tres_per_node(version):
    body = VERSIONS[version].submit_body("#!/bin/bash\n", NEUTRAL_JOB)

    assert set(body) == {"job"}
    job = body["job"]
    assert job["script"] == "#!/bin/bash\n"
    assert job["time_limit"] == {"set": True, "infinite": False, "number": 7}
    assert job["memory_per_node"] == {"set": True, "infinite": False, "number": 512}
    assert job["environment"] == ["PATH=/bin", "A=1=2"]
    assert job["tres_per_node"] == "gres/gpu:h100:2"
    assert "gres" not in job and "gpus" not in job


@pytest.mark.parametrize(
    ("version", "field", "value"),
    [("v0.0.38", "gres", "gpu:3"), ("v0.0.42", "tres_per_node", "gres/gpu:3")],
)
def test_gpus_of_any_type_are_asked_without_a_type(version, field, value):
    assert VERSIONS[version].gpus("", 3) == (field, value)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_every_version_has_its_own_slurmctld_and_accounting_paths(version):
    api = VERSIONS[version]
    assert api.ctld("/jobs") == f"/slurm/{version}/jobs"
    assert api.ctld("job/5") == f"/slurm/{version}/job/5"
    assert api.dbd("/jobs") == f"/slurmdb/{version}/jobs"


def test_versions_order_by_number_not_by_text():
    assert versions.version_key("v0.0.100") > versions.version_key("v0.0.42")
    assert VERSIONS["v0.0.42"].at_least("v0.0.40")
    assert not VERSIONS["v0.0.38"].at_least("v0.0.40")


# --- reading records of every version ----------------------------------------------------------

UNSET = {"set": False, "infinite": False, "number": 0}


def n(value: int) -> dict[str, object]:
    return {"set": True, "infinite": False, "number": value}


# The same finished 1-GPU job (exit 3) as slurmctld and slurmdbd report it, as observed on the
# 22.05 and 24.11 clusters of deploy/slurm (trimmed).
CTLD_2205 = {
    "job_id": 1,
    "job_state": "FAILED",
    "state_reason": "NonZeroExitCode",
    "exit_code": 768,
    "start_time": 1796526497,
    "end_time": 1796526498,
    "submit_time": 1796526497,
    "array_job_id": 0,
    "array_task_id": None,
    "tres_alloc_str": "cpu=1,mem=128M,node=1,billing=1,gres/gpu=1,gres/gpu:h100=1",
    "comment": "gpuc:a",
    "user_name": "gpuc-test1",
    "account": "gpucommons",
    "partition": "gpu",
}
CTLD_2411 = {
    **CTLD_2205,
    "job_state": ["FAILED"],
    "exit_code": {"status": ["ERROR"], "return_code": n(3), "signal": {"id": UNSET, "name": ""}},
    "start_time": n(1796526497),
    "end_time": n(1796526498),
    "submit_time": n(1796526497),
    "array_job_id": n(0),
    "array_task_id": UNSET,
}
DBD_2205 = {
    "job_id": 1,
    "state": {"current": "FAILED", "reason": "None"},
    "exit_code": {"status": "SUCCESS", "return_code": 0},
    "time": {"elapsed": 1, "start": 1796526497, "end": 1796526498, "submission": 1796526497},
    "array": {"job_id": 0, "task_id": None},
    "comment": {"administrator": None, "job": "gpuc:a", "system": None},
    "user": "gpuc-test1",
    "account": "gpucommons",
    "cluster": "gpucommons",
    "partition": "gpu",
    "tres": {
        "allocated": [
            {"type": "cpu", "name": None, "id": 1, "count": 1},
            {"type": "mem", "name": None, "id": 2, "count": 128},
            {"type": "energy", "name": None, "id": 3, "count": None},
            {"type": "gres", "name": "gpu", "id": 1001, "count": 1},
            {"type": "gres", "name": "gpu:h100", "id": 1002, "count": 1},
        ]
    },
}
DBD_2411 = {
    **DBD_2205,
    "state": {"current": ["FAILED"], "reason": "None"},
    "exit_code": {"status": ["ERROR"], "return_code": n(3), "signal": {"id": UNSET, "name": ""}},
    "time": {**DBD_2205["time"], "limit": n(1), "planned": n(0)},  # type: ignore[dict-item]
    "array": {"job_id": 0, "task_id": UNSET, "task": ""},
    "comment": {"administrator": "", "job": "gpuc:a", "system": ""},
    "cluster": "gpucommons2411",
    "tres": {
        "allocated": [
            {"type": "cpu", "name": "", "id": 1, "count": 1},
            {"type": "mem", "name": "", "id": 2, "count": 128},
            {"type": "energy", "name": "", "id": 3, "count": -2},
            {"type": "gres", "name": "gpu", "id": 1001, "count": 1},
            {"type": "gres", "name": "gpu:h100", "id": 1002, "count": 1},
        ]
    },
}


@pytest.mark.parametrize("raw", [CTLD_2205, CTLD_2411], ids=["v0.0.38", "v0.0.40+"])
def test_slurmctld_records_of_every_version_read_the_same(raw):
    job = records.ctld_job(raw)

    assert (job.job_id, job.key, job.array_task_id) == (1, "1", None)
    assert (job.state, job.reason, job.exit_code) == ("FAILED", "NonZeroExitCode", 3)
    assert (job.start_time, job.end_time) == (1796526497, 1796526498)
    assert (job.user, job.account, job.comment) == ("gpuc-test1", "gpucommons", "gpuc:a")
    status = records.status_from_ctld("1", [job])
    assert (status.state, status.exit_code) == ("failed", 3)
    usage = records.usage_from_ctld("1", [job])
    assert usage is not None
    assert (usage.elapsed_seconds, usage.gpus, usage.gpu_type, usage.memory_mb) == (
        1,
        1,
        "h100",
        128,
    )


@pytest.mark.parametrize("raw", [DBD_2205, DBD_2411], ids=["v0.0.38", "v0.0.40+"])
def test_accounting_records_of_every_version_read_the_same(raw):
    job = records.dbd_job(raw)

    assert (job.job_id, job.key, job.state, job.comment) == (1, "1", "FAILED", "gpuc:a")
    assert (job.start_time, job.end_time, job.elapsed) == (1796526497, 1796526498, 1)
    assert job.tres_allocated == {"cpu": 1, "mem": 128, "gres/gpu": 1, "gres/gpu:h100": 1}
    usage = records.usage_from_dbd("1", [job])
    assert usage is not None
    assert (usage.elapsed_seconds, usage.cpus, usage.gpus, usage.gpu_type) == (1, 1, 1, "h100")


def test_accounting_of_2411_keeps_the_exit_code_that_2205_loses():
    assert records.status_from_dbd("1", [records.dbd_job(DBD_2411)]).exit_code == 3
    old = records.status_from_dbd("1", [records.dbd_job(DBD_2205)])
    assert old.exit_code is None
    assert "exit code not recorded" in old.reason


@pytest.mark.parametrize(
    ("exit_code", "portal"),
    [
        (
            {"status": ["SIGNALED"], "return_code": UNSET, "signal": {"id": n(9), "name": "KILL"}},
            137,
        ),
        ({"status": ["SUCCESS"], "return_code": n(0), "signal": {"id": UNSET}}, 0),
        ({"status": ["PENDING"], "return_code": UNSET, "signal": {"id": UNSET}}, None),
    ],
)
def test_exit_code_objects_read_as_the_code_or_128_plus_the_signal(exit_code, portal):
    assert records.ctld_job({"job_id": 1, "exit_code": exit_code}).exit_code == portal


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("RUNNING", "RUNNING"),
        (["RUNNING"], "RUNNING"),
        (["COMPLETED", "COMPLETING"], "COMPLETING"),
        (["PENDING", "REQUEUED"], "REQUEUED"),
        (["FAILED", "LAUNCH_FAILED"], "FAILED"),
        ([], ""),
        (None, ""),
    ],
)
def test_state_flags_read_as_the_state_slurm_would_name(value, name):
    assert records.state_name(value) == name


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (5, 5),
        (n(5), 5),
        (UNSET, None),
        ({"set": True, "infinite": True, "number": 0}, None),
        (None, None),
        (True, None),
        ("5", None),
    ],
)
def test_numbers_of_every_version_read_as_integers_or_none(value, number):
    assert records.number(value) == number


# --- choosing a version -------------------------------------------------------------------


def paths_of(served: tuple[str, ...]) -> list[str]:
    return [f"/slurm/{v}/jobs" for v in served] + [f"/slurmdb/{v}/jobs" for v in served]


@pytest.mark.parametrize(
    ("release", "chosen"),
    [("22.05", "v0.0.38"), ("23.11", "v0.0.40"), ("24.11", "v0.0.42"), ("25.05", "v0.0.42")],
)
def test_auto_chooses_the_newest_version_both_sides_speak(release, chosen):
    assert versions.choose(paths_of(RELEASES[release])).version == chosen


def test_a_pinned_version_is_used_when_the_cluster_serves_it():
    assert versions.choose(paths_of(RELEASES["24.11"]), "v0.0.40").version == "v0.0.40"
    with pytest.raises(
        UnsupportedVersion, match=re.escape("does not serve the pinned api_version v0.0.38")
    ):
        versions.choose(paths_of(RELEASES["24.11"]), "v0.0.38")


def test_no_version_in_common_is_an_error_naming_what_the_cluster_offers():
    with pytest.raises(UnsupportedVersion) as caught:
        versions.choose(paths_of(("v0.0.37", "v0.0.39")))

    assert "offers v0.0.37, v0.0.39" in str(caught.value)
    assert "the portal speaks v0.0.38, v0.0.40, v0.0.41, v0.0.42" in str(caught.value)
    assert caught.value.offered == ("v0.0.37", "v0.0.39")


def test_a_slurmrestd_without_accounting_is_spoken_to_without_it():
    api = versions.choose([f"/slurm/{v}/jobs" for v in RELEASES["24.11"]])
    assert (api.version, api.accounting) == ("v0.0.42", False)


# --- negotiating with a slurmrestd --------------------------------------------------------


@pytest.fixture
def jwt_key(tmp_path: Path) -> Path:
    key = tmp_path / "jwt.key"
    key.write_bytes(os.urandom(32))
    return key


@pytest.fixture
def fake_slurmrestd() -> Iterator[FakeSlurmrestd]:
    server = FakeSlurmrestd().start()
    yield server
    server.stop()


def options(url: str, key: Path, **extra: object) -> dict[str, object]:
    return {
        "url": url,
        "jwt_key_file": str(key),
        "shared_root": "/var/lib/gpucommons-slurm/shared",
        "partition": "gpu",
        "gpu_types": ["h100"],
        **extra,
    }


def a_spec(**fields: object) -> JobSpec:
    data: dict[str, object] = {
        "uuid": uuid.uuid4(),
        "name": "train",
        "project": "folding",
        "cluster_user": "gpuc-test1",
        "script": "echo hi\n",
        "gpus": 1,
        "gpu_type": "h100",
    }
    data.update(fields)
    return JobSpec(**data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("release", "chosen"),
    [("22.05", "v0.0.38"), ("23.11", "v0.0.40"), ("24.11", "v0.0.42"), ("25.05", "v0.0.42")],
)
def test_the_backend_submits_and_polls_in_the_version_it_negotiated(
    fake_slurmrestd, jwt_key, release, chosen
):
    fake_slurmrestd.serve(RELEASES[release])
    backend = SlurmBackend(name="c", options=options(fake_slurmrestd.url, jwt_key))

    spec = a_spec()
    job_id = backend.submit(spec)
    status = backend.poll([JobRef(uuid=spec.uuid, backend_id=job_id, cluster_user="gpuc-test1")])

    assert backend.api.version == chosen
    assert [version for version, _ in fake_slurmrestd.submitted] == [chosen]
    assert status[job_id].state == "queued"
    assert backend.find([spec.uuid]) == {spec.uuid: job_id}
    # One negotiation for the backend instance, whatever it does next.
    assert fake_slurmrestd.calls.count("GET /openapi/v3") == 1


def test_a_pinned_version_is_spoken_without_asking(fake_slurmrestd, jwt_key):
    fake_slurmrestd.serve(RELEASES["24.11"])
    backend = SlurmBackend(
        name="c", options=options(fake_slurmrestd.url, jwt_key, api_version="v0.0.40")
    )

    backend.submit(a_spec())

    assert [version for version, _ in fake_slurmrestd.submitted] == ["v0.0.40"]
    assert "GET /openapi/v3" not in fake_slurmrestd.calls


def test_after_an_upgrade_drops_its_version_the_backend_renegotiates_once(fake_slurmrestd, jwt_key):
    fake_slurmrestd.serve(RELEASES["23.11"])
    backend = SlurmBackend(name="c", options=options(fake_slurmrestd.url, jwt_key))
    backend.submit(a_spec())
    fake_slurmrestd.serve(("v0.0.41", "v0.0.42", "v0.0.43"))  # upgraded to 25.05

    backend.submit(a_spec())

    assert [version for version, _ in fake_slurmrestd.submitted] == ["v0.0.40", "v0.0.42"]
    assert fake_slurmrestd.calls.count("GET /openapi/v3") == 2
    assert fake_slurmrestd.calls.count("POST /slurm/v0.0.40/job/submit") == 2  # then the 404


def test_a_pinned_version_the_cluster_dropped_fails_without_renegotiating(fake_slurmrestd, jwt_key):
    fake_slurmrestd.serve(RELEASES["24.11"])
    backend = SlurmBackend(
        name="c", options=options(fake_slurmrestd.url, jwt_key, api_version="v0.0.38")
    )
    with pytest.raises(
        PathNotFound, match=re.escape("does not serve POST /slurm/v0.0.38/job/submit")
    ):
        backend.submit(a_spec())
    assert "GET /openapi/v3" not in fake_slurmrestd.calls


def test_a_cluster_speaking_nothing_the_portal_speaks_refuses_jobs_with_the_versions_named(
    fake_slurmrestd, jwt_key
):
    fake_slurmrestd.serve(("v0.0.37", "v0.0.39"))
    backend = SlurmBackend(name="c", options=options(fake_slurmrestd.url, jwt_key))
    with pytest.raises(UnsupportedVersion, match=re.escape("offers v0.0.37, v0.0.39")):
        backend.submit(a_spec())
    assert fake_slurmrestd.submitted == []


def test_an_unreachable_slurmrestd_is_retried_later_not_refused(jwt_key):
    backend = SlurmBackend(name="c", options=options("http://127.0.0.1:9", jwt_key))
    with pytest.raises(BackendUnavailable):
        backend.api  # noqa: B018


# --- the system check ----------------------------------------------------------------------


def slurm_cluster(name: str, opts: dict[str, object]) -> Cluster:
    return factories.ClusterFactory(name=name, kind=Cluster.Kind.SLURM, options=opts)


def test_the_system_check_names_the_versions_of_a_cluster_it_cannot_speak_to(
    db, fake_slurmrestd, jwt_key
):
    fake_slurmrestd.serve(("v0.0.37", "v0.0.39"))
    slurm_cluster("old", options(fake_slurmrestd.url, jwt_key))

    errors = check_cluster_backends()

    assert [e.id for e in errors] == ["portal.E105"]
    assert "Cluster 'old'" in errors[0].msg
    assert "offers v0.0.37, v0.0.39" in errors[0].msg
    assert "v0.0.38, v0.0.40, v0.0.41, v0.0.42" in errors[0].msg


@pytest.mark.parametrize("release", list(RELEASES))
def test_the_system_check_accepts_every_supported_release(db, fake_slurmrestd, jwt_key, release):
    fake_slurmrestd.serve(RELEASES[release])
    slurm_cluster("ok", options(fake_slurmrestd.url, jwt_key))
    assert check_cluster_backends() == []


def test_the_system_check_names_the_field_of_an_unknown_pinned_version(
    db, fake_slurmrestd, jwt_key
):
    slurm_cluster("typo", options(fake_slurmrestd.url, jwt_key, api_version="v0.0.99"))

    errors = check_cluster_backends()

    assert [e.id for e in errors] == ["portal.E103"]
    assert "api_version must be 'auto'" in errors[0].msg
    assert "'v0.0.99'" in errors[0].msg
    assert fake_slurmrestd.calls == []  # a static problem: the cluster is not asked


def test_the_system_check_reports_a_pinned_version_the_cluster_does_not_serve(
    db, fake_slurmrestd, jwt_key
):
    fake_slurmrestd.serve(RELEASES["24.11"])
    slurm_cluster("pinned", options(fake_slurmrestd.url, jwt_key, api_version="v0.0.38"))

    errors = check_cluster_backends()

    assert [e.id for e in errors] == ["portal.E105"]
    assert "does not serve the pinned api_version v0.0.38" in errors[0].msg


def test_the_system_check_does_not_fail_a_cluster_it_cannot_reach(db, jwt_key):
    slurm_cluster("down", options("http://127.0.0.1:9", jwt_key))
    assert check_cluster_backends() == []


def test_only_v0_0_38_revalidates_the_jobs_listing_by_update_time():
    # 24.11 answers "nothing changed" with 200 and an empty list (not 304), which reads as an
    # empty cluster: later versions fetch the whole listing every time.
    assert [v for v, api in VERSIONS.items() if api.listing_revalidation] == ["v0.0.38"]


def test_accounting_query_times_are_relative_to_slurmrestds_clock_in_every_version():
    for api in VERSIONS.values():
        assert api.time_query(1000, now=1090.7) == "now-90seconds"
        assert api.time_query(2000, now=1000) == "now-0seconds"


def test_lists_in_query_parameters_are_comma_separated_only_for_v0_0_38():
    # 22.05 reads step=1,2 (and only the last of repeated parameters); 24.11 refuses "1,2"
    # with 422 and reads step=1&step=2.
    assert VERSIONS["v0.0.38"].list_param([1, 2]) == "1,2"
    for version in ("v0.0.40", "v0.0.41", "v0.0.42"):
        assert VERSIONS[version].list_param([1, 2]) == ["1", "2"]


def test_a_negotiated_version_is_asked_again_after_an_hour_to_find_a_newer_one(
    fake_slurmrestd, jwt_key, monkeypatch
):
    from jobs.backends.slurm import backend as backend_module

    fake_slurmrestd.serve(RELEASES["23.11"])
    backend = SlurmBackend(name="c", options=options(fake_slurmrestd.url, jwt_key))
    assert backend.api.version == "v0.0.40"
    fake_slurmrestd.serve(RELEASES["24.11"])  # upgraded; v0.0.40 still served
    assert backend.api.version == "v0.0.40"  # within the hour: not asked again

    monkeypatch.setattr(backend_module, "NEGOTIATION_MAX_AGE", 0.0)
    assert backend.api.version == "v0.0.42"
    fake_slurmrestd.stop()  # cannot be asked: keeps speaking what it negotiated
    assert backend.api.version == "v0.0.42"
