"""The CLI's flag parsers: memory, time, environment and array specs."""

from __future__ import annotations

import pytest

from portal.cli import parse_array, parse_env, parse_memory, parse_time, script_directives
from portal.cli.parsing import is_full_job_id, parse_job_id


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [
        ("8G", 8192),
        ("8g", 8192),
        ("8GB", 8192),
        ("2GiB", 2048),
        ("8000M", 8000),
        ("8000", 8000),
        ("1.5G", 1536),
        ("1T", 1024 * 1024),
        ("2048K", 2),
        ("512K", 1),
        (" 16G ", 16384),
    ],
)
def test_memory_accepts_slurm_sizes_and_bare_megabytes(text: str, megabytes: int) -> None:
    assert parse_memory(text) == megabytes


@pytest.mark.parametrize("text", ["", "G", "8X", "-1G", "0", "0G", "8B", "1.5.2G", "8 G B", "1e3"])
def test_memory_rejects_what_is_not_a_positive_size(text: str) -> None:
    with pytest.raises(ValueError, match="invalid memory"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),
        ("1:30:00", 90),
        ("01:30:00", 90),
        ("5:30", 6),  # Slurm's M:S; seconds round up to a whole minute
        ("0:59", 1),
        ("1-0", 1440),
        ("2-12", 3600),
        ("1-2:30", 1590),
        ("1-00:00:01", 1441),
        ("2h", 120),
        ("90m", 90),
        ("90min", 90),
        ("1h30m", 90),
        ("1d", 1440),
        ("1d12h", 2160),
        ("45s", 1),
        ("2H", 120),
    ],
)
def test_time_accepts_slurm_formats_and_durations(text: str, minutes: int) -> None:
    assert parse_time(text) == minutes


@pytest.mark.parametrize(
    "text", ["", "0", "0:00", "0-0", "0h", "1:60:00", "1:00:60", "2x", "h", "1:2:3:4", "-5", "1.5h"]
)
def test_time_rejects_zero_garbage_and_out_of_range_fields(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_time(text)


def test_env_items_split_at_the_first_equals_sign() -> None:
    assert parse_env("A=1") == ("A", "1")
    assert parse_env("URL=http://x/?a=b") == ("URL", "http://x/?a=b")
    assert parse_env("EMPTY=") == ("EMPTY", "")


def test_env_item_without_a_value_takes_this_shells_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "folding")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)

    assert parse_env("WANDB_PROJECT") == ("WANDB_PROJECT", "folding")
    with pytest.raises(ValueError, match="not set in this shell"):
        parse_env("NOT_SET_HERE")


@pytest.mark.parametrize("text", ["1A=x", "=x", "A-B=1", "A B=1", ""])
def test_env_rejects_names_a_shell_could_not_export(text: str) -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        parse_env(text)


@pytest.mark.parametrize("text", ["0-9", "0-9%2", "1,3,5", "0-15:4", "1-3,7%2", "7"])
def test_array_accepts_slurm_specs_unchanged(text: str) -> None:
    assert parse_array(text) == text


@pytest.mark.parametrize("text", ["9-0", "0-9%0", "0-9%", "a", "0-9:0", "", "1,,2", "%2", "1-"])
def test_array_rejects_malformed_specs(text: str) -> None:
    with pytest.raises(ValueError, match="invalid array"):
        parse_array(text)


def test_sbatch_directives_are_read_like_sbatch_reads_them() -> None:
    script = (
        "#!/bin/bash\n"
        "# a comment\n"
        "\n"
        "#SBATCH -J train -p gpu\n"
        "#SBATCH -t1-00 --mem=8000\n"
        "#SBATCH --gpus=h100:2 --cpus-per-task 4\n"
        "#SBATCH --array 0-3%1 --nodes=1 -o out.log\n"
        " #SBATCH --mem=1G\n"  # indented: a comment to sbatch
        "srun python train.py\n"
        "#SBATCH --time=1\n"
    )

    found, ignored = script_directives(script)

    assert found == {
        "name": "train",
        "partition": "gpu",
        "time_limit_minutes": 1440,
        "memory_mb": 8000,
        "gpus": 2,
        "gpu_type": "h100",
        "cpus": 4,
        "array": "0-3%1",
    }
    assert ignored == ["--nodes=1", "-o out.log"]


@pytest.mark.parametrize(
    ("line", "gpus", "gpu_type"),
    [
        ("--gres=gpu:2", 2, None),
        ("--gres=gpu", 1, None),
        ("--gres=gpu:a100:4", 4, "a100"),
        ("--gres=shard:1,gpu:h100:8", 8, "h100"),
        ("-G 3", 3, None),
        ("--gpus=a100:1", 1, "a100"),
    ],
)
def test_sbatch_gpu_requests_give_the_count_and_type(
    line: str, gpus: int, gpu_type: str | None
) -> None:
    found, _ = script_directives(f"#SBATCH {line}\n")

    assert found["gpus"] == gpus
    assert found.get("gpu_type") == gpu_type


@pytest.mark.parametrize(
    "line",
    ["--time=soon", "--mem=lots", "-c x", "--gres=shard:1", "--gpus=a:b:c", "--time", "-J 'open"],
)
def test_bad_sbatch_directives_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        script_directives(f"#!/bin/sh\n#SBATCH {line}\necho\n")


@pytest.mark.parametrize(
    ("text", "job_id"),
    [
        ("5B0E7A3C-4F3C-4A53-9B8E-2F1F0C8D7A11", "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11"),
        ("5b0e7a3c4f3c4a539b8e2f1f0c8d7a11", "5b0e7a3c-4f3c-4a53-9b8e-2f1f0c8d7a11"),
        ("5b0e7a3c", "5b0e7a3c"),  # the short id the pages show
        ("5B0E", "5b0e"),
        (" 5b0e7a3c-4f ", "5b0e7a3c-4f"),
    ],
)
def test_a_job_id_is_a_uuid_or_the_start_of_one(text: str, job_id: str) -> None:
    assert parse_job_id(text) == job_id
    assert is_full_job_id(job_id) == (len(job_id) == 36)


@pytest.mark.parametrize(
    "text", ["", "5b0", "5b0e7a3g", "5b0e--7a3c", "-5b0e7a3c", "5b0e7a3c-", "5b0e/../x", "a" * 33]
)
def test_a_job_id_refuses_what_could_not_start_a_uuid(text: str) -> None:
    with pytest.raises(ValueError, match="expected a UUID or its first 4"):
        parse_job_id(text)
