from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from portal.errors import PermissionDenied
from quotas.exceptions import InvalidAmount, InvalidRequest, NoRate
from quotas.models import Rate
from quotas.services import (
    RateTable,
    Usage,
    cached_rates_at,
    cost_of,
    estimate,
    rate_create,
    rates_at,
)


def test_a_new_rate_applies_from_its_date_and_past_costs_do_not_change(cluster, dave):
    before = timezone.now()
    later = before + timedelta(days=7)
    rate_create(
        actor=dave,
        cluster=cluster,
        resource=Rate.Resource.GPU_HOUR,
        gpu_type="h100",
        su_per_unit="3",
        effective_from=later,
    )
    usage = Usage(seconds=3600, gpus=1, gpu_type="h100", cpus=0)

    assert cost_of(cluster=cluster, usage=usage, at=before).total == Decimal(2)
    assert cost_of(cluster=cluster, usage=usage, at=later).total == Decimal(3)
    assert rates_at(cluster=cluster, at=later)[("gpu_hour", "h100")] == Decimal(3)


def test_a_rate_cannot_be_backdated(cluster, dave):
    with pytest.raises(InvalidRequest) as err:
        rate_create(
            actor=dave,
            cluster=cluster,
            resource=Rate.Resource.CPU_HOUR,
            su_per_unit="1",
            effective_from=timezone.now() - timedelta(days=1),
        )
    assert err.value.field == "effective_from"


@pytest.mark.parametrize("value", ["-1", "x", "NaN", "1e9"])
def test_a_rate_must_be_a_non_negative_number(cluster, dave, value):
    with pytest.raises(InvalidAmount) as err:
        rate_create(actor=dave, cluster=cluster, resource=Rate.Resource.CPU_HOUR, su_per_unit=value)
    assert err.value.field == "su_per_unit"


def test_only_facility_admins_set_rates_and_history_names_them(cluster, alice, dave):
    with pytest.raises(PermissionDenied):
        rate_create(actor=alice, cluster=cluster, resource="cpu_hour", su_per_unit="1")

    rate = rate_create(actor=dave, cluster=cluster, resource="cpu_hour", su_per_unit="1")

    assert rate.history.get().history_user == dave


def test_estimate_names_a_missing_gpu_rate(cluster):
    Rate.objects.filter(cluster=cluster, resource="gpu_hour", gpu_type="").delete()

    with pytest.raises(NoRate) as err:
        estimate(
            cluster=cluster, gpus=1, gpu_type="a100", cpus=1, memory_mb=0, time_limit_minutes=60
        )
    assert "a100" in err.value.detail


def test_array_tasks_multiply_the_estimate(cluster):
    one = estimate(
        cluster=cluster, gpus=1, gpu_type="h100", cpus=0, memory_mb=0, time_limit_minutes=30
    )
    ten = estimate(
        cluster=cluster,
        gpus=1,
        gpu_type="h100",
        cpus=0,
        memory_mb=0,
        time_limit_minutes=30,
        tasks=10,
    )
    assert (one.total, ten.total) == (Decimal(1), Decimal(10))


def test_the_rates_in_force_at_a_moment_are_the_same_however_they_are_read(cluster, dave):
    now = timezone.now()
    for days, value in ((3, "3"), (10, "5")):
        rate_create(
            actor=dave,
            cluster=cluster,
            resource=Rate.Resource.GPU_HOUR,
            gpu_type="h100",
            su_per_unit=value,
            effective_from=now + timedelta(days=days),
        )
    table = RateTable.load(cluster=cluster)

    for days, h100 in ((0, 2), (3, 3), (9, 3), (10, 5), (30, 5)):
        at = now + timedelta(days=days, seconds=1)
        rates = rates_at(cluster=cluster, at=at)
        assert rates[("gpu_hour", "h100")] == Decimal(h100)
        assert rates[("gpu_hour", "")] == Decimal(1)
        assert table.at(at) == rates == cached_rates_at(cluster=cluster, at=at)
