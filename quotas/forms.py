"""HTML forms for grant requests, reviews and staff quota management: parse and validate;
the views hand the cleaned data to one service."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.db.models import QuerySet

from accounts.models import Organization, Project
from quotas.models import Allocation, AllocationRequest, Cluster, Rate

DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
MIN_SU = Decimal("0.0001")


class ClusterChoiceField(forms.ModelMultipleChoiceField[Cluster]):
    def label_from_instance(self, obj: Cluster) -> str:
        return f"{obj} ({obj.get_kind_display()})"


class AllocationRequestForm(forms.Form):
    """A new request (with project/kind/extends) or the edit of one (without them)."""

    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), to_field_name="uuid", empty_label=None
    )
    kind = forms.ChoiceField(
        choices=AllocationRequest.Kind.choices, initial=AllocationRequest.Kind.NEW
    )
    extends = forms.ModelChoiceField(
        queryset=Allocation.objects.none(),
        to_field_name="uuid",
        required=False,
        help_text="For a renewal or supplement: the allocation it continues or adds to.",
    )
    title = forms.CharField(max_length=200)
    amount = forms.DecimalField(
        label="Amount (SU)", max_digits=18, decimal_places=4, min_value=MIN_SU
    )
    clusters = ClusterChoiceField(
        queryset=Cluster.objects.none(), widget=forms.CheckboxSelectMultiple
    )
    start_date = forms.DateField(widget=DATE)
    end_date = forms.DateField(
        widget=DATE, help_text="Inclusive: the allocation ends that night (UTC)."
    )
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), max_length=20_000)
    funder = forms.CharField(max_length=200, required=False, help_text="E.g. NSF, ERC, NIH.")
    award_number = forms.CharField(max_length=100, required=False)
    document = forms.FileField(
        required=False,
        help_text="Optional proposal or award letter (PDF, text or office, ≤ 10 MB).",
    )

    def __init__(
        self,
        *args: Any,
        projects: QuerySet[Project] | None,
        clusters: list[Cluster],
        allocations: QuerySet[Allocation] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if projects is None:  # editing: project, kind and extends are fixed
            for name in ("project", "kind", "extends"):
                del self.fields[name]
        else:
            cast("forms.ModelChoiceField[Project]", self.fields["project"]).queryset = projects
            cast("forms.ModelChoiceField[Allocation]", self.fields["extends"]).queryset = (
                allocations if allocations is not None else Allocation.objects.none()
            )
        cast(ClusterChoiceField, self.fields["clusters"]).queryset = Cluster.objects.filter(
            pk__in=[c.pk for c in clusters]
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end <= start:
            self.add_error("end_date", "The end date must be after the start date.")
        return data


class ReviewForm(forms.Form):
    ACTIONS = [
        ("approve", "Approve"),
        ("request_changes", "Request changes"),
        ("reject", "Reject"),
    ]
    action = forms.ChoiceField(choices=ACTIONS, widget=forms.HiddenInput)
    amount = forms.DecimalField(
        label="Approved amount (SU)",
        max_digits=18,
        decimal_places=4,
        min_value=MIN_SU,
        required=False,
    )
    start_date = forms.DateField(widget=DATE, required=False)
    end_date = forms.DateField(widget=DATE, required=False)
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=20_000,
        help_text="Required to reject or request changes; sent to the requester.",
    )


def _new_key() -> str:
    return uuid.uuid4().hex


class AdjustForm(forms.Form):
    amount = forms.DecimalField(
        label="SU (+ credit, − debit)",
        max_digits=18,
        decimal_places=4,
        help_text="A negative amount debits what is available.",
    )
    memo = forms.CharField(max_length=500)
    # Generated with the page: submitting the same form twice adjusts once.
    key = forms.CharField(widget=forms.HiddenInput, initial=_new_key, max_length=64)

    def clean_amount(self) -> Decimal:
        value: Decimal = self.cleaned_data["amount"]
        if value == 0:
            raise forms.ValidationError("The amount must not be zero.")
        return value


class ExtendForm(forms.Form):
    ends_on = forms.DateField(
        label="New end date", widget=DATE, help_text="The allocation ends that night (UTC)."
    )

    def ends_at(self) -> datetime:
        return day_end(self.cleaned_data["ends_on"])


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Shown to the project's members.")


class AllocationCreateForm(forms.Form):
    kind = forms.ChoiceField(choices=Allocation.Kind.choices, initial=Allocation.Kind.TRIAL)
    amount = forms.DecimalField(label="SU", max_digits=18, decimal_places=4, min_value=MIN_SU)
    clusters = ClusterChoiceField(
        queryset=Cluster.objects.filter(enabled=True), widget=forms.CheckboxSelectMultiple
    )
    starts_on = forms.DateField(label="Start date", widget=DATE, initial=date.today)
    ends_on = forms.DateField(label="End date", widget=DATE)
    memo = forms.CharField(max_length=500, required=False)
    key = forms.CharField(widget=forms.HiddenInput, initial=_new_key, max_length=64)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("starts_on"), data.get("ends_on")
        if start and end and end < start:
            self.add_error("ends_on", "The end date must not be before the start date.")
        return data


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


class RateForm(forms.Form):
    resource = forms.ChoiceField(choices=Rate.Resource.choices)
    gpu_type = forms.CharField(
        max_length=64, required=False, help_text="GPU-hour rates only; empty = any GPU type."
    )
    su_per_unit = forms.DecimalField(
        label="SU per unit", max_digits=14, decimal_places=6, min_value=Decimal(0)
    )
    effective_from = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="UTC; empty = now. Never in the past: past charges never change.",
    )


class UsageFilterForm(forms.Form):
    since = forms.DateField(label="From", widget=DATE, required=False)
    until = forms.DateField(label="Until (inclusive)", widget=DATE, required=False)
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.order_by("name"), to_field_name="uuid", required=False
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.select_related("organization").order_by("name"),
        to_field_name="uuid",
        required=False,
    )
    cluster = forms.ModelChoiceField(
        queryset=Cluster.objects.order_by("name"), to_field_name="uuid", required=False
    )
