"""The database's own guard on the counters: on PostgreSQL's exact numerics the half-quantum
slack in the CHECK constraints (quotas.models.SU_SLACK, there for SQLite's floating-point sums)
still refuses any overspend, down to one ten-thousandth of an SU."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from quotas.models import Allocation, Hold
from quotas.services import ledger_hold, ledger_settle

ONE = Decimal("0.0001")  # the ledger's quantum

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="exact numerics: PostgreSQL (as in CI)"
)


def _refused(queryset, **changes) -> bool:
    try:
        with transaction.atomic():
            queryset.update(**changes)
    except IntegrityError:
        return True
    return False


def test_an_allocation_cannot_be_overspent_or_go_negative_by_one_ten_thousandth(allocation):
    row = Allocation.objects.filter(pk=allocation.pk)

    assert _refused(row, held=F("credited") - F("charged") + ONE)
    assert _refused(row, held=-ONE)
    assert _refused(row, charged=-ONE)
    assert not _refused(row, held=F("credited") - F("charged"))  # every last SU is fine


def test_a_hold_cannot_release_and_charge_more_than_it_held_by_one_ten_thousandth(
    tenant, cluster, allocation
):
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal("2.11"), key="h"
    )
    row = Hold.objects.filter(pk=hold.pk)

    assert _refused(row, charged=Decimal("0.0352"), released=Decimal("2.0748") + ONE)
    settled = ledger_settle(actor=None, hold=hold, actual=Decimal("0.0352"))
    assert (settled.charged, settled.released) == (Decimal("0.0352"), Decimal("2.0748"))
