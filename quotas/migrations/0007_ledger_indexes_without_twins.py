"""Four fewer index writes per paid submission, and smaller indexes on the two tables that grow
with every job (holds and ledger entries):

- the single-column allocation_id indexes go: (allocation, state) and ledger_alloc_kind_time
  lead with the same column and serve every lookup by allocation;
- Hold.key and LedgerEntry.idempotency_key keep their uniqueness as named constraints instead
  of unique=True, which on PostgreSQL also keeps a varchar_pattern_ops twin of each for LIKE
  queries that nothing runs. On PostgreSQL the existing unique constraint is renamed, not
  rebuilt (a ledger of a facility in use would otherwise be locked while its index is built
  again), and the twin is dropped; elsewhere the schema editor does what the operations say.
"""

from __future__ import annotations

from typing import Any

import django.db.models.deletion
from django.db import migrations, models


class UniqueFieldToConstraint(migrations.operations.base.Operation):
    """`model.field` becomes `new_field` (the same field without unique=True) and is unique
    through UniqueConstraint(fields=[field], name=name)."""

    def __init__(self, model_name: str, field: str, new_field: models.Field, name: str) -> None:
        self.model_name, self.field, self.name = model_name, field, name
        self.alter = migrations.AlterField(model_name=model_name, name=field, field=new_field)
        self.add = migrations.AddConstraint(
            model_name=model_name,
            constraint=models.UniqueConstraint(fields=[field], name=name),
        )

    def describe(self) -> str:
        return f"Unique {self.model_name}.{self.field} as the constraint {self.name}"

    def state_forwards(self, app_label: str, state: Any) -> None:
        self.alter.state_forwards(app_label, state)
        self.add.state_forwards(app_label, state)

    def _table_column_twin(self, app_label: str, schema_editor: Any, state: Any) -> tuple[str, ...]:
        """The table, the column and the name Django gives its varchar_pattern_ops twin."""
        model = state.apps.get_model(app_label, self.model_name)
        table, column = model._meta.db_table, model._meta.get_field(self.field).column
        return table, column, schema_editor._create_index_name(table, [column], suffix="_like")

    def _rename(self, schema_editor: Any, table: str, old: str, new: str) -> None:
        quote = schema_editor.quote_name
        schema_editor.execute(
            f"ALTER TABLE {quote(table)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}"
        )

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            middle = from_state.clone()
            self.alter.state_forwards(app_label, middle)
            self.alter.database_forwards(app_label, schema_editor, from_state, middle)
            self.add.database_forwards(app_label, schema_editor, middle, to_state)
            return
        table, column, twin = self._table_column_twin(app_label, schema_editor, from_state)
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, table)
        (current,) = (
            name
            for name, info in constraints.items()
            if info["unique"] and not info["primary_key"] and info["columns"] == [column]
        )
        self._rename(schema_editor, table, current, self.name)
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(twin)}")

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            middle = to_state.clone()
            self.alter.state_forwards(app_label, middle)
            self.add.database_backwards(app_label, schema_editor, from_state, middle)
            self.alter.database_backwards(app_label, schema_editor, middle, to_state)
            return
        table, column, twin = self._table_column_twin(app_label, schema_editor, from_state)
        unique = schema_editor._create_index_name(table, [column], suffix="_uniq")
        self._rename(schema_editor, table, self.name, unique)
        quote = schema_editor.quote_name
        schema_editor.execute(
            f"CREATE INDEX {quote(twin)} ON {quote(table)} ({quote(column)} varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0006_trial_once_per_organization"),
    ]

    operations = [
        migrations.AlterField(
            model_name="hold",
            name="allocation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="holds",
                to="quotas.allocation",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="allocation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="ledger",
                to="quotas.allocation",
            ),
        ),
        UniqueFieldToConstraint(
            model_name="hold",
            field="key",
            new_field=models.CharField(max_length=200),
            name="hold_unique_key",
        ),
        UniqueFieldToConstraint(
            model_name="ledgerentry",
            field="idempotency_key",
            new_field=models.CharField(max_length=200),
            name="ledger_unique_idempotency_key",
        ),
    ]
