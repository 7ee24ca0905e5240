"""gpuc remembers a default project and cluster: chosen at login when there is only one (or
given), set with `gpuc config set`, used by submit, estimate and access when flags are omitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal import cli
from tests.cli.conftest import TOKEN, FakeApi

PROJECT_ID = "0d6a1c1e-8c1e-4b7a-9f43-7d8f2b6c5a90"
OTHER_PROJECT_ID = "9c3e5a0f-2b7d-4e41-8d6c-1a2b3c4d5e6f"
JOB_ID = "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11"
OK = 200


def _project(pid: str, org: str, slug: str) -> dict[str, object]:
    return {"id": pid, "slug": slug, "name": slug.title(), "organization": {"slug": org}}


FOLDING = _project(PROJECT_ID, "vision-lab", "folding")
DOCKING = _project(OTHER_PROJECT_ID, "vision-lab", "docking")


def _me(*projects: dict[str, object]) -> dict[str, object]:
    return {"username": "alice", "email": "alice@uni.example", "projects": list(projects)}


def _clusters(*names: str) -> dict[str, object]:
    return {"results": [{"name": n, "kind": "slurm", "gpu_types": []} for n in names]}


def _stored(config_file: Path) -> dict[str, object]:
    return json.loads(config_file.read_text())


def test_login_stores_the_only_project_and_the_only_cluster_as_defaults(
    api: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "me/", (OK, _me(FOLDING)))
    api.on("GET", "clusters/", (OK, _clusters("dev")))

    assert cli.main(["login", "--url", api.url, "--token", TOKEN]) == 0

    assert _stored(config_file) == {
        "url": api.url,
        "token": TOKEN,
        "project": PROJECT_ID,
        "cluster": "dev",
    }
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["Default project: vision-lab/folding", "Default cluster: dev"]


def test_login_with_several_projects_and_clusters_chooses_none_and_says_how_to(
    api: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "me/", (OK, _me(FOLDING, DOCKING)))
    api.on("GET", "clusters/", (OK, _clusters("dev", "big")))

    assert cli.main(["login", "--url", api.url, "--token", TOKEN]) == 0

    assert set(_stored(config_file)) == {"url", "token"}
    assert capsys.readouterr().out.splitlines()[1] == (
        "You have 2 projects: choose a default with 'gpuc config set project ORG/PROJECT' "
        "(or give --project each time)"
    )


def test_login_flags_set_the_defaults_after_checking_them(
    api: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "me/", (OK, _me(FOLDING, DOCKING)))
    api.on("GET", "projects/", (OK, {"next": None, "results": [FOLDING, DOCKING]}))
    api.on("GET", "clusters/", (OK, _clusters("dev", "big")))
    argv = ["login", "--url", api.url, "--token", TOKEN, "-p", "docking"]

    assert cli.main([*argv, "-c", "nope"]) == 1
    assert "no cluster 'nope' among the clusters you may use (dev, big)" in capsys.readouterr().err
    assert not config_file.exists()  # nothing half-stored

    assert cli.main([*argv, "-c", "big"]) == 0
    assert _stored(config_file)["project"] == OTHER_PROJECT_ID
    assert _stored(config_file)["cluster"] == "big"


def test_login_again_keeps_defaults_still_valid_and_drops_stale_ones(
    api: FakeApi, config_file: Path
) -> None:
    config_file.parent.mkdir(parents=True)
    stale = {"url": api.url, "token": "old", "project": "vision-lab/docking", "cluster": "gone"}
    config_file.write_text(json.dumps(stale))
    api.on("GET", "me/", (OK, _me(FOLDING, DOCKING)), (OK, _me(FOLDING)))
    api.on("GET", "clusters/", (OK, _clusters("dev", "big")))

    assert cli.main(["login", "--token", TOKEN]) == 0
    assert _stored(config_file) == {"url": api.url, "token": TOKEN, "project": "vision-lab/docking"}

    # docking is no longer among the projects: the only one left becomes the default
    assert cli.main(["login", "--token", TOKEN]) == 0
    assert _stored(config_file)["project"] == PROJECT_ID


def test_login_to_another_portal_forgets_the_first_ones_defaults(
    api: FakeApi, config_file: Path
) -> None:
    config_file.parent.mkdir(parents=True)
    other = {"url": "https://other.example", "token": "x", "project": "folding", "cluster": "dev"}
    config_file.write_text(json.dumps(other))
    api.on("GET", "me/", (OK, _me(FOLDING, DOCKING)))
    api.on("GET", "clusters/", (OK, _clusters("dev", "big")))

    assert cli.main(["login", "--url", api.url, "--token", TOKEN]) == 0
    assert _stored(config_file) == {"url": api.url, "token": TOKEN}


def test_config_set_checks_and_stores_a_default_then_unset_removes_it(
    logged_in: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", "projects/", (OK, {"next": None, "results": [FOLDING, DOCKING]}))
    logged_in.on("GET", "clusters/", (OK, _clusters("dev", "big")))

    assert cli.main(["config", "set", "project", "vision-lab/docking"]) == 0
    assert cli.main(["config", "set", "cluster", "big"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"Default project: vision-lab/docking ({OTHER_PROJECT_ID})",
        "Default cluster: big",
    ]
    assert _stored(config_file) == {"project": OTHER_PROJECT_ID, "cluster": "big"}

    assert cli.main(["config", "set", "project", "nope"]) == 1
    assert cli.main(["config", "set", "cluster", "nope"]) == 1
    assert _stored(config_file) == {"project": OTHER_PROJECT_ID, "cluster": "big"}

    assert cli.main(["config", "unset", "cluster"]) == 0
    assert _stored(config_file) == {"project": OTHER_PROJECT_ID}


def test_config_show_prints_the_settings_with_the_token_hidden(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.parent.mkdir(parents=True)
    secret = "gpuc_abcd1234_" + "s" * 30
    config_file.write_text(json.dumps({"url": "https://gpu.example", "token": secret}))
    monkeypatch.setenv("GPUC_CLUSTER", "big")

    assert cli.main(["config"]) == 0

    out = capsys.readouterr().out
    assert secret not in out
    assert out.splitlines()[1:] == [
        "url      https://gpu.example",
        "token    gpuc_abcd1… (hidden)",
        "project  -",
        "cluster  -  (overridden by $GPUC_CLUSTER)",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "set", "token", "x"],
        ["config", "set", "project"],
        ["config", "unset", "url"],
        ["config", "show", "extra"],
        ["config", "frob"],
    ],
)
def test_config_misuse_is_a_usage_error(
    config_file: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err
    assert not config_file.exists()


def test_submit_and_access_request_use_the_stored_defaults(
    logged_in: FakeApi, config_file: Path, tmp_path: Path
) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"project": PROJECT_ID, "cluster": "dev"}))
    script = tmp_path / "job.sh"
    script.write_text("echo hi\n")
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))
    logged_in.on(
        "POST",
        "cluster-access-requests/",
        (201, {"id": JOB_ID, "username": "alice", "cluster": "dev", "state": "pending"}),
    )

    assert cli.main(["submit", str(script), "-t", "5"]) == 0
    assert cli.main(["access", "request"]) == 0
    assert cli.main(["access", "request", "-c", "big"]) == 0

    submitted, asked, asked_big = logged_in.seen
    assert (submitted.body["project"], submitted.body["cluster"]) == (PROJECT_ID, "dev")
    assert asked.body == {"project": PROJECT_ID, "cluster": "dev"}
    assert asked_big.body == {"project": PROJECT_ID, "cluster": "big"}


def test_whoami_marks_the_default_project(
    logged_in: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"project": PROJECT_ID}))
    logged_in.on("GET", "me/", (OK, _me(FOLDING, DOCKING)))

    assert cli.main(["whoami"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"  project vision-lab/folding  {PROJECT_ID}  (default)"
    assert lines[2] == f"  project vision-lab/docking  {OTHER_PROJECT_ID}"
