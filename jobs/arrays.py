"""Job array specifications like Slurm's --array: "0-99%10", "1,3,5", "0-15:2"."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"^(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?$")


@dataclass(frozen=True)
class ArraySpec:
    indices: tuple[int, ...]
    max_parallel: int | None = None

    @property
    def size(self) -> int:
        return len(self.indices)


def parse_array(spec: str, *, max_tasks: int = 10_000, max_index: int = 1_000_000) -> ArraySpec:
    """Parse an array spec into its sorted distinct task indices; ValueError says what is wrong."""
    text = spec.strip()
    if not text:
        raise ValueError("the array specification is empty")
    max_parallel: int | None = None
    if "%" in text:
        text, _, throttle = text.partition("%")
        if not throttle.isdigit() or int(throttle) < 1:
            raise ValueError("the '%' throttle must be a positive integer")
        max_parallel = int(throttle)
    indices: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(
                f"'{part.strip()}' is not an index, a range 'a-b' or a stepped range 'a-b:s'"
            )
        start = int(match[1])
        end = int(match[2]) if match[2] is not None else start
        step = int(match[3]) if match[3] is not None else 1
        if end < start:
            raise ValueError(f"the range {start}-{end} ends before it starts")
        if step < 1:
            raise ValueError("a range step must be at least 1")
        if end > max_index:
            raise ValueError(f"array indices must not exceed {max_index}")
        count = (end - start) // step + 1
        if len(indices) + count > max_tasks:
            raise ValueError(f"an array may have at most {max_tasks} tasks")
        indices.update(range(start, end + 1, step))
    return ArraySpec(indices=tuple(sorted(indices)), max_parallel=max_parallel)
