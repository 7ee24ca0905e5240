"""portal.api.PlainFieldsMixin: a plainly valid body is validated without DRF's per-field run,
to exactly the data DRF gives; every other body gets DRF's own answer. Held to DRF on generated
bodies, for the single submission's serializer and a batch's job."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from jobs.api import BatchJobSerializer, JobBatchRequestSerializer, JobRequestSerializer
from portal.api import PlainFieldsMixin


class _DrfJob(JobRequestSerializer):
    """The same serializer, every body through DRF."""


class _DrfBatchJob(BatchJobSerializer):
    pass


_DrfJob._plain = None
_DrfBatchJob._plain = None

NAMES = [*JobRequestSerializer._declared_fields, "unknown"]
TRICKY = [
    "", " ", "  x  ", "\t\n", "\u3000job\u3000", "\x00", "a\x00b", "a\ud800b", "\udfff", "é",
    "x" * 1000, "x" * 1001, " " + "x" * 1000 + " ", "p" * 200, "p" * 201, "5", "5.0", "-3", "1e3",
    "true", "null", "[]",
]  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
VALUES = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=30),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=10),  # surrogates too
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([True, False, None, 5.0, 2.5, float(2**63)]),
    JSON,
)
PLAIN = {
    "project": "p",
    "cluster": "c",
    "name": "train",
    "script": "#!/bin/bash\ntrue\n",
    "gpus": 1,
    "gpu_type": "h100",
    "cpus": 4,
    "memory_mb": 1024,
    "time_limit_minutes": 10,
    "command": ["python", "-c", "print(1)"],
    "env": {"A": "1"},
    "array": "0-3",
    "image": "",
    "partition": "",
}


def _answers(serializer: Any) -> tuple[bool, Any, Any]:
    valid = serializer.is_valid()
    return valid, serializer.errors, dict(serializer.validated_data) if valid else None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([{}, PLAIN]),
    changes=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=6),
    drop=st.sets(st.sampled_from(NAMES), max_size=3),
)
def test_a_submission_body_validates_as_drf_validates_it(base, changes, drop):
    body = {k: v for k, v in {**base, **changes}.items() if k not in drop}

    assert _answers(JobRequestSerializer(data=body)) == _answers(_DrfJob(data=body))


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4))
def test_a_batch_job_validates_as_drf_validates_it(changes):
    body = {k: v for k, v in {**PLAIN, **changes}.items() if k not in ("project", "cluster")}

    assert _answers(BatchJobSerializer(data=body)) == _answers(_DrfBatchJob(data=body))


def test_a_plain_body_is_validated_without_building_the_fields():
    ours, drfs = JobRequestSerializer(data=PLAIN), _DrfJob(data=PLAIN)

    assert ours.is_valid() and drfs.is_valid()
    assert ours.validated_data == drfs.validated_data
    assert list(ours.validated_data) == list(drfs.validated_data)  # the declared order
    assert "fields" not in vars(ours)  # DRF's fields (a cached property) were never built
    assert "fields" in vars(drfs)


def test_whitespace_is_trimmed_but_a_script_keeps_its_own():
    body = {**PLAIN, "name": "  train  ", "script": "  run\n"}
    serializer = JobRequestSerializer(data=body)

    assert serializer.is_valid()
    assert (serializer.validated_data["name"], serializer.validated_data["script"]) == (
        "train",
        "  run\n",
    )
    assert "fields" not in vars(serializer)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": "x" * 1001}, "name", "Ensure this field has no more than 1000 characters."),
        ({"cluster": "  "}, "cluster", "This field may not be blank."),
        ({"gpus": "two"}, "gpus", "A valid integer is required."),
        ({"name": "a\x00b"}, "name", "Null characters are not allowed."),
        ({"gpus": None}, "gpus", "This field may not be null."),
        ({"shell": "bash"}, "shell", "Unknown field."),
    ],
)
def test_a_body_that_is_not_plain_gets_drfs_own_error(change, field, message):
    serializer = JobRequestSerializer(data={**PLAIN, **change})

    assert not serializer.is_valid()
    assert [str(e) for e in serializer.errors[field]] == [message]


def test_a_batch_of_plain_jobs_validates_as_drf_validates_it():
    jobs = [{k: v for k, v in PLAIN.items() if k not in ("project", "cluster")}] * 3
    body = {"project": "p", "cluster": "c", "jobs": [*jobs, {**jobs[0], "gpus": "x"}]}

    refused = JobBatchRequestSerializer(data=body)
    assert not refused.is_valid()
    assert refused.errors["jobs"][3] == {"gpus": ["A valid integer is required."]}
    accepted = JobBatchRequestSerializer(data={**body, "jobs": jobs})
    assert accepted.is_valid()
    assert [dict(job) for job in accepted.validated_data["jobs"]] == [
        {k: v for k, v in job.items()} for job in jobs
    ]


def test_a_serializer_with_a_field_that_is_not_plain_is_refused():
    with pytest.raises(TypeError, match="not a serializer of plain fields only"):

        class _Dated(PlainFieldsMixin, serializers.Serializer):
            at = serializers.DateTimeField()

    with pytest.raises(TypeError, match="not a serializer of plain fields only"):

        class _Checked(PlainFieldsMixin, serializers.Serializer):
            name = serializers.CharField()

            def validate_name(self, value):
                return value
