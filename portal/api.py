"""API plumbing shared by every app: the one exception handler, the JSON parser and the two
paginations (cursor pages, and one page of results)."""

from __future__ import annotations

import copy
import datetime
import decimal
import functools
import re
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import (
    MaxLengthValidator,
    MinLengthValidator,
    ProhibitNullCharactersValidator,
)
from django.http import Http404
from django.utils import timezone as django_timezone
from rest_framework import ISO_8601, negotiation, pagination, parsers, serializers
from rest_framework import exceptions as drf_exceptions
from rest_framework.fields import empty
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from portal.errors import DomainError


def _first_message(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    """(field, message) of the first error in a DRF error structure; nested fields are named
    like `jobs[3].gpus` and `command.0`."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if not value:
                continue
            if isinstance(key, int):
                name = f"{prefix}[{key}]" if prefix else str(key)
            elif key == "non_field_errors":
                name = prefix
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            return _first_message(value, name)
    if isinstance(detail, list):
        for index, item in enumerate(detail):
            if not item:
                continue
            if isinstance(item, dict | list):
                return _first_message(item, f"{prefix}[{index}]")
            return _first_message(item, prefix)
    return prefix or None, str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer every error as ``{"detail": "...", "code": "..."}`` (plus ``field``/``errors``)."""
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES (this module's
    # JSONParser) when it is first imported, so importing it at the top makes a cycle whenever
    # DRF's settings load this module first (the system checks of `manage.py migrate`).
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        field, message = _first_message(exc.detail)
        body: dict[str, Any] = {
            "detail": f"{field}: {message}" if field else message,
            "code": "invalid",
            "errors": exc.detail,
        }
        if field:
            body["field"] = field
        response.data = body
    elif isinstance(exc, drf_exceptions.APIException):
        codes = exc.get_codes()
        response.data = {
            "detail": str(exc.detail),
            "code": codes if isinstance(codes, str) else exc.default_code,
        }
    return response


def _nul_path(data: Any, path: str = "") -> str | None:
    """Where in a parsed JSON document a NUL character is (in a key or a string), or None."""
    if isinstance(data, str):
        return (path or "body") if "\x00" in data else None
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return name.replace("\x00", "\\u0000")
            if found := _nul_path(value, name):
                return found
    if isinstance(data, list):
        for index, item in enumerate(data):
            if found := _nul_path(item, f"{path}[{index}]"):
                return found
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser that refuses NUL characters (\\u0000) anywhere in the document with a
    400 naming where: no name, script or filter can hold one, and PostgreSQL cannot store it.
    (Query strings and form bodies are checked by portal.middleware.)"""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if where := _nul_path(data):
            raise drf_exceptions.ParseError(
                f"{where}: contains a NUL character (\\u0000), which is not allowed",
                code="invalid_character",
            )
        return data


class ContentNegotiation(negotiation.DefaultContentNegotiation):
    """DRF's, answering what scripts send (no Accept header, `*/*` or `application/json`, no
    format override) without parsing it: the first renderer when it renders JSON, with the media
    type DRF's own choice would give. Anything else, DRF decides."""

    def select_renderer(
        self, request: Any, renderers: Any, format_suffix: Any = None
    ) -> tuple[Any, str]:
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        if (
            accept in ("*/*", "application/json")
            and not format_suffix
            and renderers
            and renderers[0].media_type == "application/json"
            and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return renderers[0], "application/json"
        return super().select_renderer(request, renderers, format_suffix)  # type: ignore[no-any-return]


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination, newest first; stable under inserts."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request: Any) -> Any:
        # DRF answers 404 for a cursor it cannot read; it is a bad parameter, not a missing page.
        try:
            return super().decode_cursor(request)
        except drf_exceptions.NotFound:
            raise drf_exceptions.ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next or previous link."]}
            ) from None


class ResultsPagination(pagination.BasePagination):
    """A list that is short by nature (clusters, templates, a project's allocations) in one
    page: ``{"results": [...]}``, the envelope of the cursor pages without their links."""

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        return list(queryset)

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": ["results"], "properties": {"results": schema}}


class OptionalEmailField(serializers.EmailField):
    """A read-only email address or null: a blank model value is shown as null, never as ""
    (which is not an address, though the schema says format email)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_null=True, read_only=True, **kwargs)

    def to_representation(self, value: Any) -> Any:
        return super().to_representation(value) if value else None


class OptionalURLField(serializers.URLField):
    """A read-only URL or null: a blank model value is shown as null, never as ""."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_null=True, read_only=True, **kwargs)

    def to_representation(self, value: Any) -> Any:
        return super().to_representation(value) if value else None


class StrictFieldsMixin:
    """Reject request bodies carrying fields the serializer does not know (400 naming them)."""

    initial_data: Any
    fields: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise drf_exceptions.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class FlatFieldsMixin:
    """For a request serializer of flat fields only (no nested serializer, no field with a
    child): its fields are shallow copies of the declared ones, not DRF's deep copies, which
    rebuild every field, validators and all, for every request (a tenth of a single submit's
    CPU). A flat field holds nothing a request changes but what bind() sets on the copy."""

    _declared_fields: dict[str, Any]

    def get_fields(self) -> dict[str, Any]:
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, field in getattr(cls, "_declared_fields", {}).items():
            if isinstance(field, serializers.BaseSerializer) or hasattr(field, "child"):
                raise TypeError(f"{cls.__name__}.{name} is not a flat field")


_NOT_PLAIN = object()
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHAR_VALIDATORS = (
    MaxLengthValidator,
    MinLengthValidator,
    ProhibitNullCharactersValidator,
    ProhibitSurrogateCharactersValidator,
)


def _plain_char(field: serializers.CharField) -> Callable[[Any], Any]:
    """A str that DRF's CharField keeps (trimmed as it trims), or _NOT_PLAIN."""
    trim, blank = field.trim_whitespace, field.allow_blank
    longest, shortest = field.max_length, field.min_length

    def clean(value: Any) -> Any:
        if type(value) is not str:
            return _NOT_PLAIN
        if trim:
            value = value.strip()
        if value == "":
            return "" if blank else _NOT_PLAIN
        if (longest is not None and len(value) > longest) or (
            shortest is not None and len(value) < shortest
        ):
            return _NOT_PLAIN
        if "\x00" in value or (not value.isascii() and _SURROGATE.search(value)):
            return _NOT_PLAIN
        return value

    return clean


def _plain_integer(value: Any) -> Any:
    """An int that DRF's IntegerField (no bounds) keeps as it is, or _NOT_PLAIN."""
    return value if type(value) is int and -(2**63) <= value < 2**63 else _NOT_PLAIN


def _plain_json(field: serializers.JSONField) -> Callable[[Any], Any]:
    """A value that DRF's JSONField (not binary) keeps as it is, or _NOT_PLAIN."""

    def clean(value: Any) -> Any:
        if value is None:
            return _NOT_PLAIN
        try:
            return field.to_internal_value(value)
        except drf_exceptions.ValidationError:
            return _NOT_PLAIN

    return clean


def _plain_cleaner(field: Any) -> Callable[[Any], Any] | None:
    """How to take a plain value of a declared field without DRF's per-field run: for exactly
    CharField (its own validators only), IntegerField (no validators) and JSONField (not
    binary), writable, not null, without a default; None for any other field."""
    if field.read_only or field.allow_null or field.default is not empty:
        return None
    kind = type(field)
    if kind is serializers.CharField and all(
        isinstance(v, _CHAR_VALIDATORS) for v in field.validators
    ):
        return _plain_char(field)
    if kind is serializers.IntegerField and not field.validators:
        return _plain_integer
    if kind is serializers.JSONField and not field.binary and not field.validators:
        return _plain_json(field)
    return None


class PlainFieldsMixin:
    """For a request serializer whose fields are all plain (CharField, IntegerField, JSONField;
    see _plain_cleaner), with no validate method of its own: a body whose every value is plainly
    valid for its field (a str within its limits, an int, a JSON value; no unknown field, every
    required one there) is validated without building and running DRF's fields. Any other body
    goes through DRF, which answers with its own errors. The validated data is the same dict:
    the tests hold the two to each other on generated bodies."""

    _declared_fields: dict[str, Any]
    _plain: dict[str, tuple[Callable[[Any], Any], bool]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cleaners = {
            name: (_plain_cleaner(field), bool(field.required))
            for name, field in getattr(cls, "_declared_fields", {}).items()
        }
        validate = getattr(cls, "validate", None)
        own_checks = validate is not serializers.Serializer.validate or any(
            hasattr(cls, f"validate_{name}") for name in cleaners
        )
        if own_checks or any(clean is None for clean, _ in cleaners.values()):
            raise TypeError(f"{cls.__name__} is not a serializer of plain fields only")
        cls._plain = {
            name: (clean, required) for name, (clean, required) in cleaners.items() if clean
        }

    def plain_values(self, data: Any) -> dict[str, Any] | None:
        """The validated data of a plainly valid body; None: DRF must look at it."""
        plain = self._plain
        if plain is None or type(data) is not dict or not data.keys() <= plain.keys():
            return None
        out: dict[str, Any] = {}
        for name, (clean, required) in plain.items():
            if name not in data:
                if required:
                    return None
                continue
            value = clean(data[name])
            if value is _NOT_PLAIN:
                return None
            out[name] = value
        return out

    def run_validation(self, data: Any = empty) -> Any:
        values = self.plain_values(data)
        if values is None or self.validators:  # type: ignore[attr-defined]
            return super().run_validation(data)  # type: ignore[misc]  # DRF decides
        return values


class _Context:
    """What DRF's fields read from the thread's state on every value, read once per rendering
    (reset() starts the next rendering)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._timezone: Any = _UNSET
        self.decimal: dict[int | None, decimal.Context] = {}

    @property
    def timezone(self) -> Any:
        if self._timezone is _UNSET:
            self._timezone = django_timezone.get_current_timezone() if settings.USE_TZ else None
        return self._timezone

    def decimal_context(self, max_digits: int | None) -> decimal.Context:
        if max_digits not in self.decimal:
            context = decimal.getcontext().copy()
            if max_digits is not None:
                context.prec = max_digits
            self.decimal[max_digits] = context
        return self.decimal[max_digits]


_UNSET = object()


def _converter(field: Any, context: _Context) -> Callable[[Any], Any]:
    """`field.to_representation` for a value that is not None, doing for the common field
    classes (exactly those, no subclass) what DRF does without its per-value lookups; any other
    value or field goes to DRF itself."""
    slow: Callable[[Any], Any] = field.to_representation
    kind = type(field)
    if kind is serializers.CharField:
        return lambda value: value if type(value) is str else slow(value)
    if kind is serializers.IntegerField:
        return lambda value: value if type(value) is int else slow(value)
    if kind is serializers.UUIDField and field.uuid_format == "hex_verbose":
        return str
    if kind is serializers.ChoiceField:
        choices = field.choice_strings_to_values
        return lambda value: value if value == "" else choices.get(str(value), value)
    if kind is serializers.DateTimeField:
        output = getattr(field, "format", api_settings.DATETIME_FORMAT)
        if output is None or output.lower() != ISO_8601 or hasattr(field, "timezone"):
            return slow
        return lambda value: _iso_datetime(value, context.timezone, slow)
    if kind is serializers.DecimalField:
        coerce = getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING)
        if not coerce or field.localize or field.normalize_output or field.decimal_places is None:
            return slow
        exponent = decimal.Decimal(".1") ** field.decimal_places
        rounding = field.rounding
        max_digits = field.max_digits

        def as_decimal(value: Any) -> Any:
            if type(value) is not decimal.Decimal:
                return slow(value)
            quantized = value.quantize(
                exponent, rounding=rounding, context=context.decimal_context(max_digits)
            )
            return f"{quantized:f}"

        return as_decimal
    return slow


def _iso_datetime(value: Any, zone: Any, slow: Callable[[Any], Any]) -> Any:
    if type(value) is not datetime.datetime or zone is None or value.utcoffset() is None:
        return slow(value)
    try:
        text = value.astimezone(zone).isoformat()
    except OverflowError:
        return slow(value)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ValuesRenderer:
    """Renders rows read with `QuerySet.values()` exactly as `serializer_class` renders model
    instances (the same field objects turn each value into its JSON form, in the same order),
    without building a serializer, its fields and an attribute walk per row and field.

    For the hot lists (a page of jobs, a project's allocations). A field's source `a.b` is read
    from the row's key `a__b`; a nested serializer from the keys under its prefix; `sources`
    names other keys (a SerializerMethodField's value, computed by the caller). The tests hold
    it to the serializer's answers."""

    def __init__(self, serializer_class: type[Any], sources: dict[str, str] | None = None) -> None:
        self.serializer_class = serializer_class
        self.sources = sources or {}
        self._plan: list[tuple[str, str, Any]] | None = None
        self._local = threading.local()

    def _build(self, fields: Any, prefix: str) -> list[tuple[str, str, Any]]:
        plan = []
        for name, field in fields.items():
            if prefix == "" and name in self.sources:
                computed = isinstance(field, serializers.SerializerMethodField)
                plan.append((name, self.sources[name], None if computed else field))
            elif isinstance(field, serializers.Serializer):
                nested = f"{prefix}{str(field.source).replace('.', '__')}__"
                plan.append((name, "", self._build(field.fields, nested)))
            elif isinstance(field, serializers.SerializerMethodField) or field.source == "*":
                raise TypeError(f"{self.serializer_class.__name__}.{name} needs a source")
            else:
                plan.append((name, prefix + str(field.source).replace(".", "__"), field))
        return plan

    @functools.cached_property
    def keys(self) -> list[str]:
        """The row keys to read with `.values(*keys)` (all but those of `sources`)."""
        keys: list[str] = []

        def walk(plan: list[tuple[str, str, Any]]) -> None:
            for _, key, field in plan:
                if isinstance(field, list):
                    walk(field)
                elif key not in self.sources.values():
                    keys.append(key)

        walk(self.plan)
        return keys

    @property
    def plan(self) -> list[tuple[str, str, Any]]:
        if self._plan is None:  # the fields need the app registry: built on first use
            self._plan = self._build(self.serializer_class().fields, "")
        return self._plan

    @staticmethod
    def _row(plan: list[tuple[str, str, Any, Any]], row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, key, convert, nested in plan:
            if nested is not None:
                out[name] = ValuesRenderer._row(nested, row)
                continue
            value = row[key]
            out[name] = value if value is None or convert is None else convert(value)
        return out

    def _converters(
        self, plan: list[tuple[str, str, Any]], context: _Context | None = None
    ) -> list[tuple[str, str, Any, Any]]:
        """The plan as (name, key, converter or None, nested plan or None), each field replaced
        by what turns a value into its JSON form, for one rendering (the current time zone and
        decimal context are read once, not per value)."""
        context = context or _Context()
        out: list[tuple[str, str, Any, Any]] = []
        for name, key, field in plan:
            if isinstance(field, list):
                out.append((name, key, None, self._converters(field, context)))
            else:
                out.append((name, key, None if field is None else _converter(field, context), None))
        return out

    def _compiled(self) -> list[tuple[str, str, Any, Any]]:
        """The plan's converters, built once per thread; the context they read is reset for
        each rendering, so that each reads the current time zone and decimal context afresh."""
        local = self._local
        compiled = getattr(local, "compiled", None)
        if compiled is None:
            local.context = _Context()
            local.compiled = compiled = self._converters(self.plan, local.context)
        else:
            local.context.reset()
        return compiled

    def render(self, rows: Any) -> list[dict[str, Any]]:
        plan = self._compiled()
        return [self._row(plan, row) for row in rows]

    def render_object(self, obj: Any, **computed: Any) -> dict[str, Any]:
        """One model instance (its related objects already loaded), `computed` giving the
        values of `sources`; a missing related object renders as None, as DRF does."""
        row = dict(computed)
        for key in self.keys:
            value = obj
            for name in key.split("__"):
                value = getattr(value, name)
                if value is None:
                    break
            row[key] = value
        return self._row(self._compiled(), row)
