"""A job as someone asked for it: one typed value that the API serializer or the web form
builds and that estimate, submit and batch submit take. Its field names are written here once,
and its defaults are the resource defaults of the web form, the API and the CLI alike (the CLI
sends what it is given and the API fills in the rest from here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class JobDraft:
    """What a submission asks for, unchecked: values parsed from JSON or a form may still be of
    the wrong type; jobs.validation.validate_job turns a draft into a checked JobRequest."""

    name: str = ""
    script: str = ""
    image: str = ""
    command: Sequence[str] = ()
    partition: str = ""  # empty: the cluster's default partition
    gpus: int = 0
    gpu_type: str = ""  # empty: the cluster's first GPU type when gpus > 0
    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60
    array: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> JobDraft:
        """The draft of parsed input: its fields that were given (None counts as not given);
        other keys (project, cluster) are left to the caller."""
        return cls(**{name: data[name] for name in FIELDS if data.get(name) is not None})

    @classmethod
    def of(cls, source: object) -> JobDraft:
        """The draft of anything carrying the fields as attributes (a stored Job)."""
        return cls(**{name: getattr(source, name) for name in FIELDS})

    def values(self) -> dict[str, Any]:
        """The fields as keyword arguments (command as a list, env as a plain dict)."""
        values = {name: getattr(self, name) for name in FIELDS}
        values["command"] = list(self.command or ())
        values["env"] = dict(self.env or {})
        return values


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(JobDraft))
# The defaults every interface shows and applies (form initial values, API omissions).
DEFAULT = JobDraft()
