from __future__ import annotations

from decimal import Decimal

import pytest

from quotas.exceptions import InsufficientQuota
from quotas.models import Hold, LedgerEntry
from quotas.services import estimate, ledger_hold, ledger_settle


def test_estimate_is_rate_times_resources_times_time_limit(cluster):
    cost = estimate(
        cluster=cluster, gpus=2, gpu_type="h100", cpus=4, memory_mb=8192, time_limit_minutes=90
    )
    # 2 GPU × 1.5 h × 2 + 4 CPU × 1.5 h × 0.1 + 8 GB × 1.5 h × 0.01
    assert cost.total == Decimal("6.7200")
    assert [line.resource for line in cost.breakdown] == [
        "gpu_hour:h100",
        "cpu_hour",
        "mem_gb_hour",
    ]


def test_hold_then_settle_charges_actual_and_releases_the_rest(allocation, tenant, cluster):
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal("10"), key="job-1"
    )
    allocation.refresh_from_db()
    assert (allocation.held, allocation.available) == (Decimal("10"), Decimal("990"))

    ledger_settle(actor=None, hold=hold, actual=Decimal("3.5"))
    ledger_settle(actor=None, hold=hold, actual=Decimal("3.5"))

    allocation.refresh_from_db()
    assert (allocation.held, allocation.charged, allocation.available) == (
        0,
        Decimal("3.5"),
        Decimal("996.5"),
    )
    assert Hold.objects.get(pk=hold.pk).state == Hold.State.SETTLED
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE).count() == 1


def test_hold_beyond_available_is_refused_with_the_shortfall(allocation, tenant, cluster):
    with pytest.raises(InsufficientQuota) as err:
        ledger_hold(
            actor=None,
            project=tenant.project,
            cluster=cluster,
            amount=Decimal("1200"),
            key="too-big",
        )
    assert err.value.shortfall == Decimal("200")
    allocation.refresh_from_db()
    assert allocation.held == 0
    assert not Hold.objects.exists()
