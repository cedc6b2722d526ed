"""entities: custom lifecycles, SLA configs and records, automation rules

Revision ID: 0004_entities
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_entities"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycles",
        sa.Column("type", sa.String(length=63), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("type"),
    )
    op.create_table(
        "sla_configs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("entity_type", sa.String(length=63), nullable=False),
        sa.Column("task_type", sa.String(length=63), nullable=True),
        sa.Column("target_minutes", sa.Float(), nullable=False),
        sa.Column("start_on", sa.JSON(), nullable=False),
        sa.Column("stop_on", sa.JSON(), nullable=False),
        sa.Column("pause_on", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sla_configs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sla_configs_entity_type"), ["entity_type"], unique=False)
    op.create_table(
        "sla_records",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("entity_type", sa.String(length=63), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("task_type", sa.String(length=63), nullable=True),
        sa.Column("sla_config_id", sa.String(length=32), nullable=True),
        sa.Column("target_minutes", sa.Float(), nullable=False),
        sa.Column("actual_minutes", sa.Float(), nullable=True),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("breached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sla_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sla_records_entity_id"), ["entity_id"], unique=False)
    op.create_table(
        "automations",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("entity_type", sa.String(length=63), nullable=True),
        sa.Column("event", sa.String(length=63), nullable=False),
        sa.Column("predicate", sa.String(), nullable=True),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("automations")
    with op.batch_alter_table("sla_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sla_records_entity_id"))
    op.drop_table("sla_records")
    with op.batch_alter_table("sla_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sla_configs_entity_type"))
    op.drop_table("sla_configs")
    op.drop_table("lifecycles")
