"""A cluster's options checked as a table: each entry is one option's rule (or a function for
a few options that go together) and a loop applies them in order (the backends' check_options).
No network calls here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
