"""One draft of a job from every interface: the API and the web form give the same defaults,
validate_job answers the first bad field in its rules' order, the backends' option tables
apply each rule when it should, and every task of the jobs app is queued from jobs/queue.py."""

from __future__ import annotations

import re
from http import HTTPStatus
from pathlib import Path

import pytest

from jobs.backends.rules import Option, When, problems
from jobs.drafts import DEFAULT, FIELDS, JobDraft
from jobs.exceptions import InvalidJob
from jobs.forms import JobSubmitForm
from jobs.models import Job, JobTemplate
from jobs.validation import RULES, validate_job

ROOT = Path(__file__).resolve().parents[2]


def test_a_draft_takes_the_fields_given_and_the_defaults_for_the_rest():
    draft = JobDraft.from_data(
        {"project": "folding", "name": "train", "gpus": None, "cpus": 4, "env": None}
    )
    assert draft == JobDraft(name="train", cpus=4)
    assert (draft.gpus, draft.memory_mb, draft.time_limit_minutes) == (0, 1024, 60)
    assert set(draft.values()) == set(FIELDS)


def test_every_field_of_a_draft_has_a_rule():
    assert {name for name, _ in RULES} == set(FIELDS)


def test_the_web_form_offers_the_same_resource_defaults_as_the_api(alice, tenant):
    form = JobSubmitForm(user=alice)
    for name in ("gpus", "cpus", "memory_mb", "time_limit_minutes"):
        assert form.fields[name].initial == getattr(DEFAULT, name)
    assert Job._meta.get_field("memory_mb").default == DEFAULT.memory_mb
    assert JobTemplate._meta.get_field("gpus").default == DEFAULT.gpus


def test_an_api_submission_without_resources_gets_the_drafts_defaults(
    api_alice, tenant, sim_cluster, allocation, accounts
):
    body = {
        "project": str(tenant.project.uuid),
        "cluster": sim_cluster.name,
        "name": "bare",
        "script": "echo hi\n",
        "time_limit_minutes": 30,
    }
    response = api_alice.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.json()
    job = Job.objects.get()
    assert (job.gpus, job.gpu_type, job.cpus, job.memory_mb) == (
        DEFAULT.gpus,
        "",
        DEFAULT.cpus,
        DEFAULT.memory_mb,
    )
    assert job.time_limit_minutes == 30


@pytest.mark.parametrize(
    ("draft", "field"),
    [
        (JobDraft(name="rm -rf;", gpus=-1), "name"),
        # The script's content is checked after the image (an image needs no script).
        (JobDraft(name="ok", script="", image="x" * 300), "image"),
        (JobDraft(name="ok", script="echo\n", gpus=10**6, cpus=0), "gpus"),
        (JobDraft(name="ok", script="echo\n", gpu_type="tpu", env=[]), "gpu_type"),  # type: ignore[arg-type]
    ],
)
def test_validate_job_names_the_first_bad_field_in_the_rules_order(
    tenant, sim_cluster, draft, field
):
    with pytest.raises(InvalidJob) as raised:
        validate_job(project=tenant.project, cluster=sim_cluster, draft=draft)
    assert raised.value.field == field


def test_validate_job_fills_in_the_gpu_type_and_the_array_size(tenant, sim_cluster):
    request = validate_job(
        project=tenant.project,
        cluster=sim_cluster,
        draft=JobDraft(name="sweep", script="echo\n", gpus=2, array=" 0-9%2 ", command=["a"]),
    )
    assert (request.gpu_type, request.array, request.array_size) == ("h100", "0-9%2", 10)
    assert request.command == ("a",)


@pytest.mark.parametrize(
    ("when", "options", "said"),
    [
        (When.ALWAYS, {}, True),
        (When.PRESENT, {}, False),
        (When.PRESENT, {"size": None}, True),
        (When.GIVEN, {"size": None}, False),
        (When.GIVEN, {"size": "big"}, True),
        (When.TRUTHY, {"size": ""}, False),
        (When.TRUTHY, {"size": "big"}, True),
        (When.ALWAYS, {"size": 3}, False),
    ],
)
def test_an_option_rule_is_applied_only_when_it_says(when, options, said):
    rule = Option("size", lambda v: isinstance(v, int), "size must be whole.", when, "x")
    assert problems([rule], options) == (["size must be whole."] if said else [])


def test_every_task_of_the_jobs_app_is_queued_from_jobs_queue():
    queued = re.compile(r"\.(delay|apply_async)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "jobs").rglob("*.py")
        if path.name != "queue.py" and queued.search(path.read_text())
    ]
    assert offenders == []
