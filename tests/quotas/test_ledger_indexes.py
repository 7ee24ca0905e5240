"""The tables that grow with every job carry no index that another already covers: each insert
writes every index of its table, and a facility's ledger keeps a row for every movement of SU.
Their unique keys still refuse a second row (migration quotas 0007 made them constraints)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from quotas.models import Hold, LedgerEntry
from quotas.services import ledger_hold

GROWING = ("jobs_job", "jobs_jobevent", "quotas_hold", "quotas_ledgerentry")

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's catalog (as in CI)"
)


def _indexes(table: str) -> list[tuple[str, tuple[str, ...], bool, bool, tuple[str, ...]]]:
    """(name, columns in order, unique, partial, operator classes) of each index of `table`."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname,
                   array_agg(a.attname ORDER BY k.n),
                   x.indisunique,
                   x.indpred IS NOT NULL,
                   array_agg(o.opcname ORDER BY k.n)
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            CROSS JOIN LATERAL unnest(x.indkey, x.indclass) WITH ORDINALITY AS k(attnum, opc, n)
            JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
            JOIN pg_opclass o ON o.oid = k.opc
            WHERE x.indrelid = %s::regclass
            GROUP BY i.relname, x.indisunique, x.indpred
            """,
            [table],
        )
        return [
            (name, tuple(columns), unique, partial, tuple(opclasses))
            for name, columns, unique, partial, opclasses in cursor.fetchall()
        ]


def _covered(table: str) -> list[str]:
    """Plain indexes whose columns lead another full index of the table, and pattern_ops
    twins (for LIKE 'prefix%' queries)."""
    indexes = _indexes(table)
    keys = {
        name: list(zip(columns, opclasses, strict=True)) for name, columns, *_, opclasses in indexes
    }
    found = [
        f"{name} ({', '.join(columns)}) is led by {other}"
        for name, columns, unique, partial, _ in indexes
        if not unique and not partial
        for other, _, _, other_partial, _ in indexes
        if other != name and not other_partial and keys[other][: len(columns)] == keys[name]
    ]
    found += [
        f"{name} uses {opclass}"
        for name, _, _, _, opclasses in indexes
        for opclass in opclasses
        if opclass.endswith("_pattern_ops")
    ]
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("table", GROWING)
def test_no_index_of_a_growing_table_is_covered_by_another(table):
    assert _indexes(table), f"{table} has no index at all: the catalog query found nothing"
    assert _covered(table) == []


@pytest.mark.django_db
def test_the_checker_finds_a_covered_index_and_a_pattern_ops_twin():
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX probe_allocation ON quotas_hold (allocation_id)")
        cursor.execute("CREATE INDEX probe_like ON quotas_hold (key varchar_pattern_ops)")

    assert sorted(_covered("quotas_hold")) == [
        "probe_allocation (allocation_id) is led by quotas_hold_allocat_8362d8_idx",
        "probe_like uses varchar_pattern_ops",
    ]


@pytest.mark.django_db
def test_a_hold_key_and_a_ledger_idempotency_key_are_still_unique(tenant, cluster, allocation):
    hold = ledger_hold(
        actor=None, project=tenant.project, cluster=cluster, amount=Decimal(1), key="k"
    )
    entry = LedgerEntry.objects.get(hold=hold)

    with pytest.raises(IntegrityError, match="hold_unique_key"), transaction.atomic():
        Hold.objects.create(allocation=allocation, amount=Decimal(1), key="k")
    with pytest.raises(IntegrityError, match="ledger_unique_idempotency_key"), transaction.atomic():
        LedgerEntry.objects.create(
            allocation=allocation,
            kind="credit",
            amount=Decimal(1),
            idempotency_key=entry.idempotency_key,
        )
