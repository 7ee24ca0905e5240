"""The CLI against a real local HTTP server speaking the API's shape: requests, output, errors."""

from __future__ import annotations

import json
import os
import stat
from decimal import Decimal
from pathlib import Path

import pytest

from portal import cli
from portal.cli import account
from tests.cli.conftest import TOKEN, FakeApi

JOB_ID = "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11"
PROJECT_ID = "0d6a1c1e-8c1e-4b7a-9f43-7d8f2b6c5a90"
OTHER_PROJECT_ID = "9c3e5a0f-2b7d-4e41-8d6c-1a2b3c4d5e6f"
OK = 200


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.sh"
    path.write_text("#!/bin/bash\npython train.py\n")
    return path


def _projects(*pairs: tuple[str, str, str]) -> list[dict[str, object]]:
    return [
        {"id": pid, "slug": slug, "name": slug.title(), "organization": {"slug": org}}
        for pid, org, slug in pairs
    ]


# --- submit, estimate and the flags they send ------------------------------------------


def test_submit_sends_the_parsed_flags_and_prints_the_job_id(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    code = cli.main(
        [
            "submit", str(script), "--project", PROJECT_ID, "--cluster", "sim",
            "--gpus", "2", "--gpu-type", "h100", "--cpus", "8", "--mem", "8G",
            "--time", "1:30:00", "--array", "0-9%2", "--env", "A=1", "--env", "B=x=y",
            "--idempotency-key", "run-42",
        ]
    )  # fmt: skip

    assert code == cli.EXIT_OK
    assert capsys.readouterr().out == f"{JOB_ID}\n"
    [request] = logged_in.seen
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == "run-42"
    assert request.body == {
        "project": PROJECT_ID,
        "cluster": "sim",
        "name": "train.sh",
        "script": "#!/bin/bash\npython train.py\n",
        "gpus": 2,
        "gpu_type": "h100",
        "cpus": 8,
        "memory_mb": 8192,
        "time_limit_minutes": 90,
        "array": "0-9%2",
        "env": {"A": "1", "B": "x=y"},
    }


def test_submit_leaves_out_flags_not_given_so_the_server_defaults_apply(
    logged_in: FakeApi, script: Path
) -> None:
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    argv = ["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h", "--name", "x"]
    assert cli.main(argv) == 0

    [request] = logged_in.seen
    assert request.headers["Idempotency-Key"].startswith("gpuc-")
    assert set(request.body) == {"project", "cluster", "name", "script", "time_limit_minutes"}
    assert request.body["name"] == "x"


@pytest.mark.parametrize(
    ("file_name", "job_name"),
    [("train.sh", "train.sh"), ("my run (v2).sh", "my-run-v2-.sh"), (".hidden", "hidden")],
)
def test_the_default_job_name_is_the_script_name_made_acceptable(
    logged_in: FakeApi, tmp_path: Path, file_name: str, job_name: str
) -> None:
    (tmp_path / file_name).write_text("echo\n")
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    args = ["submit", str(tmp_path / file_name), "-p", PROJECT_ID, "-c", "sim", "-t", "1h"]
    assert cli.main([*args, "--partition", "debug"]) == 0
    assert logged_in.seen[0].body["name"] == job_name
    assert logged_in.seen[0].body["partition"] == "debug"


def test_project_and_cluster_default_to_the_environment_then_the_config_file(
    logged_in: FakeApi,
    script: Path,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"project": OTHER_PROJECT_ID, "cluster": "sim"}))

    assert cli.main(["submit", str(script), "-t", "1h"]) == 0
    monkeypatch.setenv("GPUC_PROJECT", PROJECT_ID)
    monkeypatch.setenv("GPUC_CLUSTER", "big")
    assert cli.main(["submit", str(script), "-t", "1h"]) == 0
    assert cli.main(["submit", str(script), "-t", "1h", "-c", "flag"]) == 0

    sent = [(s.body["project"], s.body["cluster"]) for s in logged_in.seen]
    assert sent == [(OTHER_PROJECT_ID, "sim"), (PROJECT_ID, "big"), (PROJECT_ID, "flag")]
    config_file.write_text("{}")
    monkeypatch.delenv("GPUC_CLUSTER")
    assert cli.main(["submit", str(script), "-t", "1h"]) == cli.EXIT_USAGE
    assert "give --cluster (or set a default: 'gpuc config set cluster" in capsys.readouterr().err


def test_submit_resolves_a_project_slug_across_pages_of_projects(
    logged_in: FakeApi, script: Path
) -> None:
    page2 = "http://elsewhere.example/api/v1/projects/?cursor=p2"
    logged_in.on(
        "GET",
        "projects/",
        (OK, {"next": page2, "results": _projects((OTHER_PROJECT_ID, "vision-lab", "vision"))}),
        (OK, {"next": None, "results": _projects((PROJECT_ID, "vision-lab", "folding"))}),
    )
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    assert cli.main(["submit", str(script), "-p", "folding", "-c", "sim", "-t", "1h"]) == 0

    assert [s.query for s in logged_in.requests_to("projects/")] == [{}, {"cursor": "p2"}]
    assert logged_in.requests_to("jobs/")[0].body["project"] == PROJECT_ID


def test_an_ambiguous_project_slug_is_refused_naming_the_choices(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "GET",
        "projects/",
        (OK, _projects((PROJECT_ID, "vision-lab", "ml"), (OTHER_PROJECT_ID, "nlp-lab", "ml"))),
    )
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    code = cli.main(["submit", str(script), "-p", "ml", "-c", "sim", "-t", "1h"])

    assert code == cli.EXIT_ERROR
    assert "ambiguous" in capsys.readouterr().err
    assert logged_in.requests_to("jobs/") == []
    assert cli.main(["submit", str(script), "-p", "nlp-lab/ml", "-c", "sim", "-t", "1h"]) == 0
    assert logged_in.requests_to("jobs/")[0].body["project"] == OTHER_PROJECT_ID


def test_an_unknown_project_slug_is_an_error(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", "projects/", (OK, []))

    assert (
        cli.main(["estimate", str(script), "-p", "nope", "-c", "sim", "-t", "1h"]) == cli.EXIT_ERROR
    )
    assert capsys.readouterr().err == (
        "error: no project 'nope' among your projects (see 'gpuc whoami')\n"
    )


def test_submit_reads_the_script_from_stdin_with_a_dash(
    logged_in: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("echo hi\n"))
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    assert cli.main(["submit", "-", "-p", PROJECT_ID, "-c", "sim", "-t", "1h"]) == 0
    assert logged_in.seen[0].body["script"] == "echo hi\n"
    assert logged_in.seen[0].body["name"] == "stdin"


def test_submit_wait_streams_the_jobs_output_and_exits_with_its_exit_code(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/",
        (OK, {"id": JOB_ID, "state": "queued"}),
        (OK, {"id": JOB_ID, "state": "running"}),
        (OK, {"id": JOB_ID, "state": "running"}),
        (OK, {"id": JOB_ID, "state": "failed", "exit_code": 3}),
    )
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/log/",
        (OK, {"data": "", "next_offset": 0, "eof": False}),  # queued: nothing yet
        (OK, {"data": "epoch 1\n", "next_offset": 8, "eof": False}),
        (OK, {"data": "", "next_offset": 8, "eof": False}),
        (OK, {"data": "epoch 2\n", "next_offset": 16, "eof": False}),
        (OK, {"data": "", "next_offset": 16, "eof": False}),
        (OK, {"data": "", "next_offset": 16, "eof": False}),
        (OK, {"data": "Traceback\n", "next_offset": 26, "eof": True}),  # the drain
    )

    argv = ["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h", "--wait"]
    code = cli.main([*argv, "--interval", "0"])

    assert code == 3
    out, err = capsys.readouterr()
    assert out == "epoch 1\nepoch 2\nTraceback\n"
    assert err.splitlines() == [
        f"{JOB_ID}: queued",
        f"{JOB_ID}: running",
        f"{JOB_ID}: failed (exit 3)",
        f"{JOB_ID[:8]}: its error output: gpuc logs {JOB_ID[:8]} --stream stderr",
    ]
    offsets = [s.query["offset"] for s in logged_in.requests_to(f"jobs/{JOB_ID}/log/")]
    assert offsets == ["0", "0", "8", "8", "16", "16", "16"]
    assert {s.query["stream"] for s in logged_in.requests_to(f"jobs/{JOB_ID}/log/")} == {"stdout"}
    assert len(logged_in.requests_to(f"jobs/{JOB_ID}/")) == 4


def test_submit_wait_with_json_prints_only_the_final_job(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = {"id": JOB_ID, "state": "completed", "exit_code": 0}
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))
    logged_in.on("GET", f"jobs/{JOB_ID}/", (OK, {"id": JOB_ID, "state": "running"}), (OK, final))

    argv = ["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h", "-w", "--json"]
    assert cli.main([*argv, "--interval", "0"]) == 0

    out, err = capsys.readouterr()
    assert json.loads(out) == final
    assert err.splitlines() == [f"{JOB_ID}: running", f"{JOB_ID}: completed"]
    assert logged_in.requests_to(f"jobs/{JOB_ID}/log/") == []


@pytest.mark.parametrize(
    ("job", "code"),
    [
        ({"state": "completed", "exit_code": 0}, 0),
        ({"state": "completed", "exit_code": None}, 0),
        ({"state": "cancelled", "exit_code": None}, 1),
        ({"state": "timeout", "exit_code": None}, 1),
        ({"state": "failed", "exit_code": 256 + 7}, 7),
        ({"state": "failed", "exit_code": -9}, 1),
    ],
)
def test_a_waited_jobs_outcome_becomes_the_exit_code(job: dict[str, object], code: int) -> None:
    assert cli.job_exit_code(job) == code


def test_estimate_prints_the_cost_and_its_breakdown(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "POST",
        "jobs/estimate/",
        (
            OK,
            {
                "estimated_cost": "6.3000",
                "breakdown": [
                    {"resource": "gpu_hour:h100", "quantity": "3", "rate": "2", "cost": "6.0000"},
                    {"resource": "cpu_hour", "quantity": "3", "rate": "0.1", "cost": "0.3000"},
                ],
            },
        ),
    )

    argv = ["estimate", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h", "-G", "2"]
    code = cli.main([*argv, "--gpu-type", "h100"])

    assert code == 0
    out = capsys.readouterr().out
    assert "GPU-hour (h100)  3         2.00     6.00" in out
    assert "Estimated cost: 6.30 SU" in out
    assert logged_in.seen[0].body["gpus"] == 2


def test_sbatch_lines_in_the_script_are_defaults_that_flags_override(
    logged_in: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=resnet --time=2:00:00\n"
        "#SBATCH --gres=gpu:a100:4 -c 16\n"
        "#SBATCH --mem 64G  # plenty\n"
        "#SBATCH --output=slurm-%j.out\n"
        "python train.py\n"
        "#SBATCH --array=0-9\n"
    )
    logged_in.on("POST", "jobs/", (201, {"id": JOB_ID, "state": "pending"}))

    code = cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "30", "-G", "1"])

    assert code == 0
    body = logged_in.seen[0].body
    assert {k: body[k] for k in ("name", "time_limit_minutes", "gpus", "gpu_type", "cpus")} == {
        "name": "resnet",
        "time_limit_minutes": 30,
        "gpus": 1,
        "gpu_type": "a100",
        "cpus": 16,
    }
    assert body["memory_mb"] == 64 * 1024
    assert "array" not in body  # after the first command: sbatch stops reading there too
    assert capsys.readouterr().err == (
        f"warning: {script}: ignoring '#SBATCH --output=slurm-%j.out'\n"
    )


def test_a_job_without_any_time_limit_is_a_usage_error(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim"]) == cli.EXIT_USAGE
    assert "give a time limit with --time" in capsys.readouterr().err
    assert logged_in.seen == []


def test_a_bad_sbatch_line_is_a_usage_error_naming_the_line(
    logged_in: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n\n#SBATCH --time=soon\necho\n")

    assert cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim"]) == cli.EXIT_USAGE
    assert f"{script}: line 3: '#SBATCH --time': invalid time" in capsys.readouterr().err
    assert logged_in.seen == []


# --- errors ----------------------------------------------------------------------------


def test_insufficient_quota_prints_the_detail_and_exits_4(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    detail = "Insufficient quota: this job needs 20 SU but ... (short by 10 SU)"
    logged_in.on(
        "POST", "jobs/", (402, {"detail": detail, "code": "insufficient_quota", "shortfall": "10"})
    )

    code = cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h"])

    assert code == cli.EXIT_QUOTA == 4
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {detail}\n")


def test_a_validation_error_prints_the_detail_and_exits_1(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "POST",
        "jobs/",
        (400, {"detail": "gpu_type: no such GPU type", "code": "invalid", "field": "gpu_type"}),
    )

    assert cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h"]) == 1
    assert capsys.readouterr().err == "error: gpu_type: no such GPU type\n"


def test_an_unknown_job_prints_not_found_and_exits_1(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", JOB_ID]) == 1
    assert capsys.readouterr().err == "error: Not found.\n"


def test_an_answer_that_is_not_json_is_reported_by_its_status(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", f"jobs/{JOB_ID}/", (500, "<html>Server Error</html>"))

    assert cli.main(["status", JOB_ID]) == 1
    assert capsys.readouterr().err == "error: HTTP 500 Internal Server Error\n"


def test_a_success_that_is_not_json_is_an_error_not_a_crash(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", f"jobs/{JOB_ID}/", (OK, "<html>login page</html>"))

    assert cli.main(["status", JOB_ID]) == 1
    assert "not JSON" in capsys.readouterr().err


def test_a_submit_whose_answer_is_lost_is_retried_with_the_same_idempotency_key(
    logged_in: FakeApi, script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "POST",
        "jobs/",
        (502, "<html>Bad Gateway</html>"),
        (503, {"detail": "Service unavailable", "code": "unavailable"}),
        (201, {"id": JOB_ID, "state": "pending"}),
    )

    assert cli.main(["submit", str(script), "-p", PROJECT_ID, "-c", "sim", "-t", "1h"]) == 0

    keys = {s.headers["Idempotency-Key"] for s in logged_in.requests_to("jobs/")}
    assert len(logged_in.requests_to("jobs/")) == 3
    assert len(keys) == 1
    out, err = capsys.readouterr()
    assert out == f"{JOB_ID}\n"
    assert "answered HTTP 502; retrying" in err


def test_transient_failures_give_up_after_three_retries(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", f"jobs/{JOB_ID}/", (503, {"detail": "Down for upgrade", "code": "x"}))

    assert cli.main(["status", JOB_ID]) == 1
    assert len(logged_in.seen) == 4
    assert capsys.readouterr().err.splitlines()[-1] == "error: Down for upgrade"


def test_a_cancel_is_not_repeated_after_a_gateway_error(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("POST", f"jobs/{JOB_ID}/cancel/", (502, "<html>Bad Gateway</html>"))

    assert cli.main(["cancel", JOB_ID]) == 1
    assert len(logged_in.seen) == 1
    assert capsys.readouterr().err == "error: HTTP 502 Bad Gateway\n"


def test_a_rejected_token_says_to_log_in_again(
    api: FakeApi, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("GPUC_URL", api.url)
    monkeypatch.setenv("GPUC_TOKEN", "gpuc_revoked")

    assert cli.main(["ls"]) == 1
    assert capsys.readouterr().err == (
        "error: Invalid API token (run 'gpuc login' with a valid token)\n"
    )


def test_an_unreachable_server_is_an_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("GPUC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("GPUC_TOKEN", TOKEN)

    assert cli.main(["ls"]) == 1
    err = capsys.readouterr().err.splitlines()
    failure = f"cannot reach http://127.0.0.1:{port}: Connection refused"
    assert err == [
        f"warning: {failure}; retrying in 0 s",
        f"warning: {failure}; retrying in 0 s",
        f"warning: {failure}; retrying in 0 s",
        f"error: {failure}",
    ]


def test_commands_without_a_login_say_how_to_log_in(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["balance"]) == 1
    assert "run 'gpuc login'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "train.sh", "-p", PROJECT_ID, "-c", "sim", "--mem", "lots"],
        ["submit", "train.sh", "-p", PROJECT_ID, "-c", "sim", "--cpus", "0"],
        ["submit", "train.sh", "-p", PROJECT_ID, "-c", "sim", "--time", "0"],
        ["submit", "train.sh", "-p", PROJECT_ID, "-c", "sim", "--array", "9-0"],
        ["submit", "train.sh", "-p", PROJECT_ID, "-c", "sim", "--env", "1=2"],
        ["submit", "train.sh", "-p", PROJECT_ID, "-c", "sim", "--gpus", "-1"],
        ["submit", "train.sh", "-c", "sim"],
        ["status", "not-a-uuid"],
        ["logs", JOB_ID, "--stream", "stdin"],
        ["results", "get", JOB_ID],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_without_calling_the_api(
    logged_in: FakeApi, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err
    assert logged_in.seen == []


def test_a_missing_script_file_is_a_usage_error(
    logged_in: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["submit", str(tmp_path / "nope.sh"), "-p", PROJECT_ID, "-c", "sim", "-t", "1h"]
    )

    assert code == cli.EXIT_USAGE
    assert "cannot read the script" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "insufficient quota" in capsys.readouterr().out


# --- login and configuration -----------------------------------------------------------


def test_login_verifies_the_token_and_stores_it_readable_by_the_owner_only(
    api: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "me/", (OK, {"username": "alice", "email": "alice@uni.example"}))

    code = cli.main(["login", "--url", f"{api.url}/api/v1/", "--token", TOKEN])

    assert code == 0
    assert json.loads(config_file.read_text()) == {"url": api.url, "token": TOKEN}
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    assert api.seen[0].path == "me/"
    assert f"Logged in to {api.url} as alice" in capsys.readouterr().out


def test_login_prompts_for_the_token_without_echo_when_not_given(
    api: FakeApi, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.on("GET", "me/", (OK, {"username": "alice"}))
    prompts: list[str] = []
    monkeypatch.setattr(account.getpass, "getpass", lambda prompt: prompts.append(prompt) or TOKEN)

    assert cli.main(["login", "--url", api.url]) == 0
    assert len(prompts) == 1
    assert json.loads(config_file.read_text())["token"] == TOKEN


def test_login_with_a_rejected_token_stores_nothing(
    api: FakeApi, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["login", "--url", api.url, "--token", "gpuc_wrong"]) == 1
    assert not config_file.exists()
    assert "Invalid API token" in capsys.readouterr().err


def test_login_without_any_url_is_a_usage_error(config_file: Path) -> None:
    assert cli.main(["login", "--token", TOKEN]) == cli.EXIT_USAGE


def test_login_keeps_the_stored_url_and_tightens_an_old_files_mode(
    api: FakeApi, config_file: Path
) -> None:
    api.on("GET", "me/", (OK, {"username": "alice"}))
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"url": api.url, "token": "old", "project": "folding"}))
    os.chmod(config_file, 0o644)

    assert cli.main(["login", "--token", TOKEN]) == 0
    assert json.loads(config_file.read_text()) == {
        "url": api.url,
        "token": TOKEN,
        "project": "folding",
    }
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_environment_variables_override_the_configuration_file(
    api: FakeApi, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "gpuc_stale"}))
    api.on("GET", "jobs/", (OK, {"next": None, "results": []}))

    assert cli.main(["ls"]) == 1  # the file alone points at a dead address
    monkeypatch.setenv("GPUC_URL", api.url)
    monkeypatch.setenv("GPUC_TOKEN", TOKEN)
    assert cli.main(["ls"]) == 0
    assert api.seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_corrupt_configuration_file_is_reported(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{not json")

    assert cli.main(["ls"]) == 1
    assert "cannot read the configuration file" in capsys.readouterr().err


# --- ls, status, logs, cancel, results, balance ----------------------------------------


def _job(n: int, **extra: object) -> dict[str, object]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": f"job-{n}",
        "state": "running",
        "project": {"slug": "folding"},
        "cluster": "sim",
        "gpus": 1,
        "created_at": "2025-01-02T03:04:05.123456Z",
        "estimated_cost": "2.0000",
        **extra,
    }


def test_ls_follows_cursor_pages_up_to_the_limit_and_keeps_the_token_on_its_host(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = "http://internal.invalid:9999/api/v1/jobs/?cursor=abc&state=running&page_size=3"
    logged_in.on(
        "GET",
        "jobs/",
        (OK, {"next": elsewhere, "previous": None, "results": [_job(1), _job(2)]}),
        (OK, {"next": elsewhere, "previous": None, "results": [_job(3), _job(4)]}),
    )

    assert cli.main(["ls", "--state", "running", "--limit", "3"]) == 0

    first, second = logged_in.requests_to("jobs/")
    assert first.query == {"state": "running", "page_size": "3"}
    assert second.query == {"cursor": "abc", "state": "running", "page_size": "3"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "STATE",
        "PROJECT",
        "CLUSTER",
        "GPUS",
        "CREATED",
        "SU",
    ]
    assert [line.split()[1] for line in lines[1:]] == ["job-1", "job-2", "job-3"]
    assert "2025-01-02 03:04:05" in lines[1]


def test_ls_json_prints_the_jobs_as_a_list(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on("GET", "jobs/", (OK, {"next": None, "results": [_job(1)]}))

    assert cli.main(["ls", "--json", "--project", PROJECT_ID, "--cluster", "sim"]) == 0
    assert json.loads(capsys.readouterr().out) == [_job(1)]
    assert logged_in.seen[0].query == {"project": PROJECT_ID, "cluster": "sim", "page_size": "50"}


def test_status_prints_resources_costs_and_the_timeline(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job(
        1,
        state="completed",
        gpu_type="h100",
        cpus=4,
        memory_mb=16384,
        time_limit_minutes=90,
        exit_code=0,
        charged_cost="1.2500",
        events=[
            {"created_at": "2025-01-02T03:04:05Z", "from_state": "", "to_state": "pending"},
            {
                "created_at": "2025-01-02T03:05:00Z",
                "from_state": "running",
                "to_state": "completed",
                "message": "exit 0",
            },
        ],
    )
    logged_in.on("GET", f"jobs/{JOB_ID}/", (OK, job))

    assert cli.main(["status", JOB_ID]) == 0

    out = capsys.readouterr().out
    assert "State:      completed" in out
    assert "GPUs:       1 x h100" in out
    assert "Memory:     16G" in out
    assert "Time limit: 90 min" in out
    assert "Charged:    1.25 SU" in out
    assert "2025-01-02 03:05:00  running -> completed  exit 0" in out


def test_logs_reads_every_chunk_up_to_the_end(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/log/",
        (OK, {"data": "line 1\n", "next_offset": 7, "eof": False}),
        (OK, {"data": "line 2\n", "next_offset": 14, "eof": True}),
    )

    assert cli.main(["logs", JOB_ID, "--stream", "stderr"]) == 0

    assert capsys.readouterr().out == "line 1\nline 2\n"
    assert [s.query for s in logged_in.seen] == [
        {"stream": "stderr", "offset": "0"},
        {"stream": "stderr", "offset": "7"},
    ]


def test_logs_follow_polls_until_the_job_is_final_and_drains_the_tail(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/log/",
        (OK, {"data": "a\n", "next_offset": 2, "eof": True}),
        (OK, {"data": "", "next_offset": 2, "eof": True}),
        (OK, {"data": "b\n", "next_offset": 4, "eof": True}),
        (OK, {"data": "c\n", "next_offset": 6, "eof": True}),
    )
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/",
        (OK, {"state": "running"}),
        (OK, {"state": "running"}),
        (OK, {"state": "completed"}),
    )

    assert cli.main(["logs", JOB_ID, "-f", "--interval", "0"]) == 0

    assert capsys.readouterr().out == "a\nb\nc\n"
    offsets = [s.query["offset"] for s in logged_in.requests_to(f"jobs/{JOB_ID}/log/")]
    assert offsets == ["0", "2", "2", "4"]


@pytest.mark.parametrize(
    ("status", "state", "printed"),
    [
        (200, "cancelled", "cancelled"),
        (202, "running", "cancel requested (state: running)"),
    ],
)
def test_cancel_posts_and_says_whether_the_job_already_ended(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str], status: int, state: str, printed: str
) -> None:
    logged_in.on("POST", f"jobs/{JOB_ID}/cancel/", (status, {"id": JOB_ID, "state": state}))

    assert cli.main(["cancel", JOB_ID]) == 0
    assert capsys.readouterr().out == f"{JOB_ID}: {printed}\n"
    assert logged_in.seen[0].method == "POST"


def test_results_lists_the_output_files(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_in.on(
        "GET",
        f"jobs/{JOB_ID}/results/",
        (OK, [{"path": "out/model.pt", "size": 1234, "modified": "2025-01-02T03:04:05Z"}]),
    )

    assert cli.main(["results", JOB_ID]) == 0
    assert "out/model.pt  1234   2025-01-02 03:04:05" in capsys.readouterr().out


def test_results_get_streams_a_file_to_its_name_or_to_o(
    logged_in: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB, several blocks
    logged_in.on("GET", f"jobs/{JOB_ID}/results/out dir/model #1.pt", (OK, payload))
    monkeypatch.chdir(tmp_path)

    assert cli.main(["results", "get", JOB_ID, "out dir/model #1.pt"]) == 0
    assert (tmp_path / "model #1.pt").read_bytes() == payload
    assert cli.main(["results", "get", JOB_ID, "out dir/model #1.pt", "-o", "w.pt"]) == 0
    assert (tmp_path / "w.pt").read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model #1.pt", "w.pt"]


def test_a_failed_download_leaves_no_file_behind(
    logged_in: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "model.pt"

    assert cli.main(["results", "get", JOB_ID, "model.pt", "-o", str(target)]) == 1
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == "error: Not found.\n"


def test_balance_shows_each_allocation_and_totals_the_active_ones(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    def allocation(n: int, status: str, credited: str, held: str, charged: str) -> dict:
        available = Decimal(credited) - Decimal(held) - Decimal(charged)
        return {
            "id": f"00000000-0000-4000-8000-{n:012d}",
            "project": PROJECT_ID,
            "project_name": "Folding",
            "clusters": ["local", "sim"],
            "kind": "grant",
            "status": status,
            "ends_at": "2026-01-01T00:00:00Z",
            "credited": credited,
            "held": held,
            "charged": charged,
            "available": str(available),
        }

    allocations = [
        allocation(1, "active", "1000.0000", "20.0000", "30.5000"),
        allocation(2, "active", "50.0000", "0.0000", "0.0000"),
        allocation(3, "expired", "70.0000", "0.0000", "10.0000"),
    ]
    logged_in.on("GET", "allocations/", (OK, {"results": allocations}))

    assert cli.main(["balance", "--project", PROJECT_ID]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert logged_in.seen[0].query == {"project": PROJECT_ID}
    assert lines[0].split() == [
        "ALLOCATION", "PROJECT", "CLUSTERS", "KIND", "STATUS", "LAST-DAY",
        "CREDITED", "HELD", "CHARGED", "AVAILABLE",
    ]  # fmt: skip
    assert lines[1].split()[1:] == [
        "Folding", "local,sim", "grant", "active", "2025-12-31",
        "1,000.00", "20.00", "30.50", "949.50",
    ]  # fmt: skip
    assert lines[3].split()[4] == "expired"
    assert lines[-1].split() == ["total", "(active)", "1,050.00", "20.00", "30.50", "999.50"]


def test_clusters_lists_gpu_types_limits_partitions_and_rates(
    logged_in: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = {
        "name": "sim",
        "kind": "simulated",
        "gpu_types": ["h100", "a100"],
        "options": {
            "gpu_types": ["h100", "a100"],
            "max_gpus": 8,
            "max_cpus": 64,
            "max_memory_mb": 512 * 1024,
            "max_time_minutes": 2 * 24 * 60 + 90,
            "max_array_tasks": 1000,
            "partitions": {"gpu": {}, "debug": {"max_gpus": 1, "max_time_minutes": 30}},
            "default_partition": "gpu",
        },
        "rates": [
            {"resource": "gpu_hour", "gpu_type": "h100", "su_per_unit": "2.000000"},
            {"resource": "cpu_hour", "gpu_type": "", "su_per_unit": "0.100000"},
        ],
    }
    dev = {
        "name": "dev",
        "kind": "slurm",
        "gpu_types": [],
        "options": {"partitions": ["main", "long"], "max_nodes": 2},
        "rates": [],
    }
    bare = {"name": "old", "kind": "local", "gpu_types": [], "rates": []}  # no options at all
    logged_in.on("GET", "clusters/", (OK, {"results": [sim, dev, bare]}))

    assert cli.main(["clusters"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sim  (simulated; GPU types: h100, a100)",
        "  limits per job: 8 GPUs, 64 CPUs, 512G memory, 2d1h30m time, 1000 array tasks",
        "  partition gpu (default): the limits above",
        "  partition debug: 1 GPU, 30m time",
        "  GPU-hour (h100)         2.00 SU",
        "  CPU-hour                0.10 SU",
        "dev  (slurm; GPU types: -)",
        "  limits per job: max_nodes=2",
        "  partitions: main (default), long",
        "old  (local; GPU types: -)",
        "  limits per job: none stated (the portal defaults apply)",
    ]
