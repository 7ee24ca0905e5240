"""Hot reads compiled to SQL once per process, then run with each request's values.

Building a queryset and compiling it costs more CPU than anything else in a small API request
(about 1 ms a statement: filters, joins, subqueries, the compiler). The requests that scripts
poll (me/, the first page of jobs, a project's allocations) read the same statements each time
with other ids, so `PreparedValues` builds the queryset once with stand-in values, keeps its SQL
and the positions of the stand-ins among its parameters, and then only swaps in the caller's
values, runs the SQL and applies the fields' converters, as `QuerySet.values()` does.

The queryset is built twice with two different sets of stand-ins: the SQL must be the same and
each stand-in must be found at the same places among the parameters, otherwise the queryset
depends on the values themselves (not only on their kind) and compiling it is refused.
Values that change the SQL (a filter that is present or not, a page size) are passed as the
shape: one compiled statement per distinct shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet

# Two sets of stand-ins no real value takes: ids far below zero, uuids of a fixed odd pattern.
_INTS = (-7_301_946_285_113_577, -6_104_448_297_301_924)
_UUIDS = (
    uuid.UUID("5e9d1c62-0f3b-4d7e-9a11-7c3e2b5d4f01"),
    uuid.UUID("a41f7e08-6c2d-4b95-8e3a-1d9c0b7f6e02"),
)
_STRS = ("\x1f\x1eprepared-a\x1e", "\x1f\x1eprepared-b\x1e")


def _kind(value: Any) -> Hashable:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{value!r} is a shape, not a parameter")
    if isinstance(value, int):
        return "int"
    if isinstance(value, uuid.UUID):
        return "uuid"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        return ("ints", len(value))
    raise TypeError(f"Cannot prepare a parameter of type {type(value).__name__}")


def _stand_in(kind: Any, index: int, offset: int) -> Any:
    """The stand-in of set `index` (0 or 1) for a parameter of this kind; `offset` (the
    parameter's place) tells the parameters apart."""
    if kind == "int":
        return _INTS[index] - offset
    if kind == "uuid":
        return uuid.UUID(int=_UUIDS[index].int + offset)
    if kind == "str":
        return f"{_STRS[index]}{offset}"
    return [_INTS[index] - 1_000_000 * (offset + 1) - item for item in range(kind[1])]


# A place among the parameters: (index, parameter name, item of a list or None, as hex).
Slot = tuple[int, str, int | None, bool]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]
    slots: tuple[Slot, ...]
    names: tuple[str, ...]
    converters: tuple[tuple[int, tuple[Any, ...], Any], ...]
    col_count: int
    trim: bool


# Statements kept per PreparedValues (shapes: filters present or not, a list's length).
MAX_SHAPES = 256
_EMPTY = "empty"  # the queryset can have no rows (`IN ()`): answered without a statement


def _slots(params: Sequence[Any], stand_ins: Mapping[str, Any]) -> list[Slot]:
    where: dict[Any, tuple[str, int | None, bool]] = {}
    for name, value in stand_ins.items():
        for item, one in enumerate(value) if isinstance(value, list) else [(None, value)]:
            where[(type(one), one)] = (name, item, False)
            if isinstance(one, uuid.UUID):  # backends without a uuid type bind its hex
                where[(str, one.hex)] = (name, item, True)
    slots = []
    for index, param in enumerate(params):
        found = where.get((type(param), param)) if isinstance(param, Hashable) else None
        if found is not None:
            slots.append((index, *found))
    return slots


class PreparedValues:
    """`build(**shape, **params)` returns a `.values(...)` queryset; `rows(params, shape)`
    answers what `list(build(**shape, **params))` would, reading the compiled SQL.

    `params` are ints, uuids, strings and lists of ints (a list's length is part of the shape).
    """

    def __init__(self, build: Callable[..., QuerySet[Any, Any]]) -> None:
        self.build = build
        self._compiled: dict[Hashable, _Compiled | str] = {}

    def _compile(self, alias: str, shape: Mapping[str, Any], kinds: Mapping[str, Hashable]) -> Any:
        sets = []
        for index in (0, 1):
            stand_ins = {
                name: _stand_in(kind, index, offset)
                for offset, (name, kind) in enumerate(kinds.items())
            }
            queryset = self.build(**shape, **stand_ins)
            compiler = queryset.query.get_compiler(using=alias)
            try:
                sql, params = compiler.as_sql()
            except EmptyResultSet:
                return _EMPTY
            sets.append((queryset, compiler, sql, list(params), _slots(params, stand_ins)))
        (queryset, compiler, sql, params, slots), (_, _, sql_b, params_b, slots_b) = sets
        stand_in_slots = {index for index, *_ in slots}
        same_rest = all(
            a == b
            for index, (a, b) in enumerate(zip(params, params_b, strict=True))
            if index not in stand_in_slots
        )
        named = {name for _, name, _, _ in slots}
        if sql != sql_b or slots != slots_b or not same_rest or named != set(kinds):
            raise ValueError(f"{self.build!r} cannot be prepared: its SQL depends on {kinds}")
        query = queryset.query
        if query.selected:
            names = list(query.selected)
        else:
            names = [*query.extra_select, *query.values_select, *query.annotation_select]
        fields = [select[0] for select in compiler.select[0 : compiler.col_count]]
        converters = compiler.get_converters(fields)
        return _Compiled(
            sql=sql,
            params=tuple(params),
            slots=tuple(slots),
            names=tuple(names),
            converters=tuple((pos, tuple(c), e) for pos, (c, e) in converters.items()),
            col_count=compiler.col_count,
            trim=bool(compiler.has_extra_select),
        )

    def rows(
        self,
        params: Mapping[str, Any],
        shape: Mapping[str, Any] | None = None,
        *,
        using: str = DEFAULT_DB_ALIAS,
    ) -> list[dict[str, Any]]:
        shape = shape or {}
        kinds = {name: _kind(value) for name, value in sorted(params.items())}
        key = (using, tuple(sorted(shape.items())), tuple(kinds.items()))
        compiled = self._compiled.get(key)
        if compiled is None:
            if len(self._compiled) >= MAX_SHAPES:  # an unusual caller: the ORM, uncompiled
                return list(self.build(**shape, **params).using(using))
            compiled = self._compiled[key] = self._compile(using, shape, kinds)
        if not isinstance(compiled, _Compiled):  # _EMPTY
            return []
        values = list(compiled.params)
        for index, name, item, as_hex in compiled.slots:
            value = params[name] if item is None else params[name][item]
            values[index] = value.hex if as_hex else value
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, values)
            fetched = cursor.fetchall()
        names = compiled.names
        out = []
        for raw in fetched:
            row = list(raw[: compiled.col_count] if compiled.trim else raw)
            for pos, convs, expression in compiled.converters:
                value = row[pos]
                for converter in convs:
                    value = converter(value, expression, connection)
                row[pos] = value
            out.append(dict(zip(names, row, strict=False)))
        return out
