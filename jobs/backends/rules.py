"""A cluster's options checked as a table: each entry is one option's rule (or a function for
a few options that go together) and a loop applies them in order (the backends' check_options).
No network calls here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from jobs.backends.base import JobSpec

Check = Callable[[Mapping[str, Any]], list[str]]


class When(Enum):
    """When an option's rule applies."""

    ALWAYS = "always"  # an absent option is checked as its default
    PRESENT = "present"  # the key is there (even as null)
    GIVEN = "given"  # the key is there and not null
    TRUTHY = "truthy"  # the value is not empty


@dataclass(frozen=True)
class Option:
    """One option's rule: `ok(value)` holds, or `problem` is said (a sentence)."""

    key: str
    ok: Callable[[Any], object]
    problem: str
    when: When = When.PRESENT
    default: Any = None

    def __call__(self, options: Mapping[str, Any]) -> list[str]:
        value = options.get(self.key, self.default)
        skip = {
            When.ALWAYS: False,
            When.PRESENT: self.key not in options,
            When.GIVEN: value is None,
            When.TRUTHY: not value,
        }[self.when]
        return [] if skip or self.ok(value) else [self.problem]


def never_stored(keys: Iterable[str], problem: str) -> Check:
    """A secret never sits in the options (which the admin and the database show): `problem`
    when any of `keys` is there."""
    keys = tuple(keys)
    return lambda options: [problem] if any(key in options for key in keys) else []


def exactly_one(keys: Iterable[str], problem: str) -> Check:
    """Exactly one of `keys` is given; else `problem`, a format string of `got` (the ones
    given, or "none")."""
    keys = tuple(keys)

    def check(options: Mapping[str, Any]) -> list[str]:
        given = [key for key in keys if options.get(key)]
        return [] if len(given) == 1 else [problem.format(got=", ".join(given) or "none")]

    return check


def problems(checks: Iterable[Check], options: Mapping[str, Any]) -> list[str]:
    """Every check's problems, in the table's order (empty when the options are valid)."""
    return [problem for check in checks for problem in check(options)]


def is_positive_int(value: Any) -> bool:
    """A whole number of at least 1 (true and false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def whole_in(low: int, high: int) -> Callable[[Any], bool]:
    """A whole number from `low` to `high`."""
    return lambda value: (
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    )


# --- a job's spec against one cluster's options (the backends' validate_spec) ----------------

SpecCheck = Callable[[JobSpec, Mapping[str, Any], str], list[tuple[str, str]]]


@dataclass(frozen=True)
class Refuse:
    """One rule of a job's spec: when `refused(spec, options)` holds, the cluster refuses the
    job's `field` with `message`, a format string of spec, options and cluster (or a function
    of them)."""

    field: str
    refused: Callable[[JobSpec, Mapping[str, Any]], object]
    message: str | Callable[[JobSpec, Mapping[str, Any], str], str]

    def __call__(
        self, spec: JobSpec, options: Mapping[str, Any], cluster: str
    ) -> list[tuple[str, str]]:
        if not self.refused(spec, options):
            return []
        message = self.message
        if isinstance(message, str):
            return [(self.field, message.format(spec=spec, options=options, cluster=cluster))]
        return [(self.field, message(spec, options, cluster))]


def refusals(
    checks: Iterable[SpecCheck], spec: JobSpec, options: Mapping[str, Any], cluster: str
) -> list[tuple[str, str]]:
    """(field, message) of every rule the spec breaks, in the table's order."""
    return [found for check in checks for found in check(spec, options, cluster)]


def is_command(value: Any) -> bool:
    """An argument list: a sequence of strings, not a string itself."""
    return (
        not isinstance(value, str | bytes)
        and isinstance(value, Sequence)
        and all(isinstance(part, str) for part in value)
    )


# The rules every backend that runs a script or a command applies alike (its SPEC_CHECKS).
SCRIPT_OR_COMMAND = Refuse(
    "command",
    lambda spec, _: is_command(spec.command) and spec.script and spec.command,
    "Give either a script or a command, not both.",
)
AT_LEAST_ONE_CPU = Refuse("cpus", lambda spec, _: spec.cpus < 1, "A job needs at least 1 CPU.")
AT_LEAST_ONE_MINUTE = Refuse(
    "time_limit_minutes",
    lambda spec, _: spec.time_limit_minutes < 1,
    "The time limit must be at least 1 minute.",
)
