"""portal.api.FlatFieldsMixin: a request serializer of flat fields gets shallow copies of its
declared fields, validating exactly as DRF's deep copies do, and a nested field is refused."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from jobs.api import JobRequestSerializer
from portal.api import FlatFieldsMixin

BODIES = [
    {"project": "p", "cluster": "c", "name": "n", "time_limit_minutes": 5, "env": {"A": "1"}},
    {"project": "p" * 201, "cluster": "", "name": 7, "time_limit_minutes": "soon", "gpus": []},
    {"project": "p", "cluster": "c", "name": "n\x00", "time_limit_minutes": 5, "cpus": "2"},
    {"cluster": "c", "name": "n", "time_limit_minutes": 5, "unknown": 1},
]


class _DeepCopied(JobRequestSerializer):
    """The same serializer with DRF's own get_fields (deep copies)."""

    def get_fields(self):
        return serializers.Serializer.get_fields(self)


@pytest.mark.parametrize("body", BODIES)
def test_shallow_copied_fields_validate_as_deep_copied_ones(body):
    ours, drfs = JobRequestSerializer(data=body), _DeepCopied(data=body)

    assert ours.is_valid() == drfs.is_valid()
    assert ours.errors == drfs.errors
    assert (ours.validated_data if not ours.errors else None) == (
        drfs.validated_data if not drfs.errors else None
    )


def test_each_serializer_binds_its_own_field_objects():
    first, second = JobRequestSerializer(data={}), JobRequestSerializer(data={})

    assert first.fields["name"] is not second.fields["name"]
    assert first.fields["name"].parent is first and second.fields["name"].parent is second
    assert JobRequestSerializer._declared_fields["name"].parent is None  # never bound itself


def test_a_serializer_with_a_nested_or_child_field_is_refused_at_definition():
    with pytest.raises(TypeError, match=r"Nested\.items is not a flat field"):

        class Nested(FlatFieldsMixin, serializers.Serializer):
            items = serializers.ListField(child=serializers.CharField())

    with pytest.raises(TypeError, match=r"Inner\.job is not a flat field"):

        class Inner(FlatFieldsMixin, serializers.Serializer):
            job = JobRequestSerializer()
