"""Flag and script parsing for `gpuc`: memory, time, environment, array specs, #SBATCH lines.

Every parser raises ValueError with a message fit for the user."""

from __future__ import annotations

import math
import os
import re
import shlex
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# --- flag parsing ----------------------------------------------------------------------

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([kmgt](?:i?b)?)?$", re.IGNORECASE)
_MB_PER_UNIT = {"": Decimal(1), "k": Decimal(1) / 1024, "m": Decimal(1), "g": Decimal(1024)}
_MB_PER_UNIT["t"] = Decimal(1024 * 1024)
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?$", re.IGNORECASE)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARRAY_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def parse_memory(text: str) -> int:
    """Megabytes from Slurm-style sizes: '8G', '8000M', '512K', '1.5T', '8GB' or a bare MB count."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise ValueError(f"invalid memory '{text}': use MB (8000) or a size like 8G, 8000M")
    unit = (match[2] or "")[:1].lower()
    megabytes = math.ceil(Decimal(match[1]) * _MB_PER_UNIT[unit])
    if megabytes < 1:
        raise ValueError(f"invalid memory '{text}': must be at least 1 MB")
    return megabytes


def parse_time(text: str) -> int:
    """Whole minutes (seconds round up) from Slurm's --time formats or a duration like '2h'.

    Slurm: 'M', 'M:S', 'H:M:S', 'D-H', 'D-H:M', 'D-H:M:S'. Durations: '2h', '90m', '1h30m', '1d'.
    """
    value = text.strip()
    if match := _SLURM_TIME.match(value):
        days, first, second, third = (int(g) if g else None for g in match.groups())
        if days is not None:  # D-H[:M[:S]]
            hours, minutes, seconds = first or 0, second or 0, third or 0
        elif third is not None:  # H:M:S
            hours, minutes, seconds = first or 0, second or 0, third
        else:  # M or M:S
            hours, minutes, seconds = 0, first or 0, second or 0
        if (second is not None and second >= 60) or (third is not None and third >= 60):
            raise ValueError(f"invalid time '{text}': minutes and seconds must be below 60")
        total = (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    elif (match := _DURATION.match(value)) and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    else:
        raise ValueError(f"invalid time '{text}': use minutes (90), H:M:S (1:30:00) or 2h, 90m, 1d")
    if total <= 0:
        raise ValueError(f"invalid time '{text}': must be longer than zero")
    return math.ceil(total / 60)


def parse_env(text: str) -> tuple[str, str]:
    """One `--env` item: 'KEY=VALUE', or 'KEY' alone to pass this shell's value of KEY."""
    key, sep, value = text.partition("=")
    if not _ENV_KEY.match(key):
        raise ValueError(f"invalid environment variable name '{key}' in '{text}'")
    if not sep:
        if key not in os.environ:
            raise ValueError(f"--env {key}: not set in this shell (use {key}=VALUE)")
        value = os.environ[key]
    return key, value


def parse_array(text: str) -> str:
    """Validate a Slurm array spec ('0-9', '0-9%2', '1,3,5', '0-15:4') and return it unchanged."""
    spec, sep, limit = text.strip().partition("%")
    if sep and not (limit.isdigit() and int(limit) >= 1):
        raise ValueError(f"invalid array '{text}': the %limit must be a positive integer")
    for item in spec.split(","):
        match = _ARRAY_ITEM.match(item)
        if not match:
            raise ValueError(
                f"invalid array '{text}': use indices like 0-9, 1,3,5, 0-15:4 or 0-9%2"
            )
        start, end, step = match[1], match[2], match[3]
        if end is not None and int(end) < int(start):
            raise ValueError(f"invalid array '{text}': range {item} ends before it starts")
        if step is not None and int(step) < 1:
            raise ValueError(f"invalid array '{text}': the step must be at least 1")
    return text.strip()


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"'{text}' is not a whole number")
    return int(text)


# sbatch option -> (body field, parser); --gres and --gpus may also carry the GPU type.
_DIRECTIVES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "-J": ("name", str),
    "--job-name": ("name", str),
    "-p": ("partition", str),
    "--partition": ("partition", str),
    "-t": ("time_limit_minutes", parse_time),
    "--time": ("time_limit_minutes", parse_time),
    "--mem": ("memory_mb", parse_memory),
    "-c": ("cpus", _count),
    "--cpus-per-task": ("cpus", _count),
    "-a": ("array", parse_array),
    "--array": ("array", parse_array),
    "-G": ("gpus", lambda value: _gpu_request(value, gres=False)),
    "--gpus": ("gpus", lambda value: _gpu_request(value, gres=False)),
    "--gres": ("gpus", lambda value: _gpu_request(value, gres=True)),
}


def script_directives(script: str) -> tuple[dict[str, Any], list[str]]:
    """Job fields from the script's leading '#SBATCH' lines, read as sbatch reads them (up to
    the first command), and the options gpuc does not understand. Raises ValueError."""
    found: dict[str, Any] = {}
    ignored: list[str] = []
    for number, line in enumerate(script.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not line.startswith("#SBATCH")):
            continue
        if not line.startswith("#SBATCH"):
            break
        try:
            tokens = shlex.split(line.removeprefix("#SBATCH"), comments=True)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        while tokens:
            token = tokens.pop(0)
            option, sep, value = token.partition("=")
            if (
                not sep
                and option.startswith("-")
                and not option.startswith("--")
                and len(option) > 2
            ):
                option, value, sep = option[:2], option[2:], "="  # -t60
            if option not in _DIRECTIVES:
                if not sep and tokens and not tokens[0].startswith("-"):
                    token = f"{token} {tokens.pop(0)}"  # an unknown option's value
                ignored.append(token)
                continue
            if not sep:
                if not tokens:
                    raise ValueError(f"line {number}: '#SBATCH {option}' needs a value")
                value = tokens.pop(0)
            field, parse = _DIRECTIVES[option]
            try:
                found[field] = parse(value)
            except ValueError as exc:
                raise ValueError(f"line {number}: '#SBATCH {option}': {exc}") from None
    if "gpus" in found:
        found["gpus"], gpu_type = found["gpus"]
        if gpu_type:
            found["gpu_type"] = gpu_type
    return found, ignored


def _gpu_request(value: str, *, gres: bool) -> tuple[int, str]:
    """(count, type) from '--gpus 2', '--gpus h100:2', '--gres gpu:2' or '--gres gpu:h100:2'."""
    parts = value.split(":")
    if gres:
        items = [i for i in value.split(",") if i.split(":")[0] == "gpu"]
        if not items:
            raise ValueError(f"'{value}' asks for no GPU")
        parts = items[0].split(":")[1:] or ["1"]
    count = parts[-1]
    if len(parts) > 2 or not count.isdigit():
        raise ValueError(f"invalid GPU request '{value}': use N or TYPE:N")
    return int(count), parts[0] if len(parts) == 2 else ""


MIN_SHORT_ID = 4  # hexadecimal digits, as git asks of an abbreviated commit
_SHORT_ID = re.compile(r"^[0-9a-f]+(?:-[0-9a-f]+)*$")


def parse_job_id(text: str) -> str:
    """A job's UUID, or the start of one: the short id the pages show (its first 8 digits)
    or any 4 to 31 hexadecimal digits; checking it here keeps anything else out of the URL."""
    value = text.strip().lower()
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    digits = value.replace("-", "")
    if _SHORT_ID.match(value) and MIN_SHORT_ID <= len(digits) < 32:
        return value
    raise ValueError(
        f"invalid job id '{text}': expected a UUID or its first {MIN_SHORT_ID} or more "
        "hexadecimal digits (the short id the portal shows)"
    )


def is_full_job_id(job_id: str) -> bool:
    """Whether a parse_job_id result is a whole UUID rather than the start of one."""
    return len(job_id) == 36
