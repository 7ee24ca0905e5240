"""The submit form: parses the fields into a JobDraft; jobs.services.job_submit checks it.
Its initial resources are JobDraft's defaults, the same as the API's and the CLI's."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.db.models import QuerySet

from accounts.models import Project, User
from jobs.drafts import DEFAULT, JobDraft
from jobs.models import SessionApp
from jobs.selectors import clusters_for_user, projects_for_user
from quotas.models import Cluster


def parse_env(text: str) -> dict[str, str]:
    """`NAME=value` lines (blank lines and # comments skipped) into a dict."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "=" not in stripped:
            raise forms.ValidationError(f"Line {number}: write NAME=value")
        key, _, value = stripped.partition("=")
        env[key.strip()] = value
    return env


class JobSubmitForm(forms.Form):
    project: forms.ModelChoiceField[Project] = forms.ModelChoiceField(
        queryset=None, to_field_name="uuid"
    )
    cluster: forms.ModelChoiceField[Cluster] = forms.ModelChoiceField(
        queryset=None, to_field_name="name"
    )
    name = forms.CharField(max_length=128, initial="job")
    script = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "mono"}),
        strip=False,
        required=False,
        initial="#!/bin/bash\necho hello\n",
    )
    gpus = forms.IntegerField(initial=DEFAULT.gpus)
    gpu_type = forms.CharField(required=False, max_length=64)
    cpus = forms.IntegerField(initial=DEFAULT.cpus)
    memory_mb = forms.IntegerField(initial=DEFAULT.memory_mb, label="Memory (MB)")
    time_limit_minutes = forms.IntegerField(
        initial=DEFAULT.time_limit_minutes, label="Time limit (minutes)"
    )
    partition = forms.CharField(required=False, max_length=64)
    array = forms.CharField(required=False, max_length=64, help_text="e.g. 0-99%10")
    env = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        required=False,
        help_text="NAME=value, one per line",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        projects = projects_for_user(user=user)
        clusters = clusters_for_user(user=user)
        cast("forms.ModelChoiceField[Project]", self.fields["project"]).queryset = projects
        cast("forms.ModelChoiceField[Cluster]", self.fields["cluster"]).queryset = clusters
        if not self.is_bound:
            # Preselect the first choices so the live estimate has something to price.
            if "project" not in self.initial and (project := projects.first()):
                self.initial["project"] = project.uuid
            if "cluster" not in self.initial and (cluster := clusters.first()):
                self.initial["cluster"] = cluster.name
        self.gpu_types = sorted({t for c in clusters for t in c.gpu_types})

    @property
    def project_queryset(self) -> QuerySet[Project]:
        """The projects the form offers (the user's, set above)."""
        queryset = cast("forms.ModelChoiceField[Project]", self.fields["project"]).queryset
        return queryset if queryset is not None else Project.objects.none()

    @property
    def cluster_queryset(self) -> QuerySet[Cluster]:
        """The clusters the form offers (those open to the user, set above)."""
        queryset = cast("forms.ModelChoiceField[Cluster]", self.fields["cluster"]).queryset
        return queryset if queryset is not None else Cluster.objects.none()
        self.fields["gpu_type"].widget.attrs.update(
            {"list": "gpu-types", "placeholder": "cluster default"}
        )

    def clean_script(self) -> str:
        # Browsers send a textarea's line breaks as CRLF; bash would read each CR as part of
        # the command (`done\r`: syntax error), so store the script with Unix line endings.
        return str(self.cleaned_data.get("script") or "").replace("\r\n", "\n")

    def clean_env(self) -> dict[str, str]:
        return parse_env(self.cleaned_data.get("env") or "")

    def service_kwargs(self) -> dict[str, Any]:
        """project, cluster and draft: the arguments of job_estimate and job_submit."""
        data = self.cleaned_data
        return {"project": data["project"], "cluster": data["cluster"], "draft": self.draft()}

    def draft(self) -> JobDraft:
        data = dict(self.cleaned_data)
        for optional in ("gpu_type", "partition", "array"):
            data[optional] = data.get(optional) or ""
        return JobDraft.from_data(data)


class SessionStartForm(forms.Form):
    """Start an interactive session: jobs.services.sessions.session_start checks the values."""

    app: forms.ModelChoiceField[SessionApp] = forms.ModelChoiceField(
        queryset=None, to_field_name="slug"
    )
    project: forms.ModelChoiceField[Project] = forms.ModelChoiceField(
        queryset=None, to_field_name="uuid"
    )
    cluster: forms.ModelChoiceField[Cluster] = forms.ModelChoiceField(
        queryset=None, to_field_name="name"
    )
    # The same resource defaults as a job's (jobs.drafts), written once.
    gpus = forms.IntegerField(initial=DEFAULT.gpus, label="GPUs")
    gpu_type = forms.CharField(required=False, max_length=64, label="GPU type")
    cpus = forms.IntegerField(initial=DEFAULT.cpus, label="CPUs")
    memory_mb = forms.IntegerField(initial=DEFAULT.memory_mb, label="Memory (MB)")
    time_limit_minutes = forms.IntegerField(
        initial=DEFAULT.time_limit_minutes, label="Time limit (minutes)"
    )
    partition = forms.CharField(required=False, max_length=64)
    shared_with_managers = forms.BooleanField(
        required=False, label="Let the project's PI and managers open it too"
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        projects = projects_for_user(user=user)
        clusters = clusters_for_user(user=user)
        cast(
            "forms.ModelChoiceField[SessionApp]", self.fields["app"]
        ).queryset = SessionApp.objects.filter(enabled=True)
        cast("forms.ModelChoiceField[Project]", self.fields["project"]).queryset = projects
        cast("forms.ModelChoiceField[Cluster]", self.fields["cluster"]).queryset = clusters

    def service_kwargs(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["app"] = data["app"].slug
        for optional in ("gpu_type", "partition"):
            data[optional] = data.get(optional) or ""
        return data


class ProjectIdleLimitForm(forms.Form):
    """A project's session idle limit (the service checks the maximum)."""

    idle_minutes = forms.IntegerField(min_value=1, label="Idle limit (minutes)")
