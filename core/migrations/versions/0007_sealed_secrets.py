"""secrets at rest: connector configurations and webhook secrets sealed

Revision ID: 0007_sealed_secrets
Revises: 0002, 0003

A connector row keeps its whole configuration sealed in ``sealed_config`` and, in ``config``, only what the
API shows (credentials masked); a webhook secret is sealed in place, with the hint the API shows beside it.
Rows written before this revision are sealed here under the active ``CONVEYOR_SECRET_KEYS__<ID>`` key, so
upgrading a store that holds connectors or webhook secrets needs that key: without it the migration stops
and says so, and nothing is left half done (the migration runs in one transaction). The downgrade opens
them again with the same keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from core.connectors import masked_config, seal_config
from core.connectors import sealing_context as connector_context
from core.sealing import Sealer, secret_sealer
from core.settings import get_settings
from core.triggers import sealing_context as trigger_context
from core.triggers import secret_entry

revision: str = "0007_sealed_secrets"
down_revision: str | tuple[str, ...] | None = ("0002", "0003")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

connectors = sa.table(
    "connectors",
    sa.column("name", sa.String),
    sa.column("type", sa.String),
    sa.column("config", sa.JSON),
    sa.column("sealed_config", sa.Text),
)
triggers = sa.table("triggers", sa.column("id", sa.String), sa.column("secrets", sa.JSON))


def _sealer() -> Sealer:
    given: Sealer | None = context.config.attributes.get("sealer")
    return given if given is not None else secret_sealer(get_settings())


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(connectors.c.name, connectors.c.type, connectors.c.config)).all()
    signed = [(i, s) for i, s in bind.execute(sa.select(triggers.c.id, triggers.c.secrets)).all() if s]
    # Seal before any change: a missing key stops the migration with the store as it was (SQLite runs DDL
    # outside the transaction, so a failure after the column was added would leave it behind).
    sealer = _sealer() if rows or signed else None
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed_config", sa.Text(), nullable=True))
    if sealer is not None:
        for name, type_, config in rows:
            bind.execute(
                connectors.update()
                .where(connectors.c.name == name)
                .values(config=masked_config(type_, config), sealed_config=seal_config(sealer, name, config))
            )
        for trigger_id, entries in signed:
            sealed = [
                secret_entry(sealer, trigger_id, e["value"], e.get("created_at"), e.get("expires_at"))
                for e in entries
            ]
            bind.execute(triggers.update().where(triggers.c.id == trigger_id).values(secrets=sealed))
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.alter_column("sealed_config", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(connectors.c.name, connectors.c.sealed_config)).all()
    signed = [(i, s) for i, s in bind.execute(sa.select(triggers.c.id, triggers.c.secrets)).all() if s]
    if rows or signed:
        sealer = _sealer()
        for name, sealed_config in rows:
            config = json.loads(sealer.open(sealed_config, context=connector_context(name)))
            bind.execute(connectors.update().where(connectors.c.name == name).values(config=config))
        for trigger_id, entries in signed:
            clear = [
                {
                    "value": sealer.open(e["value"], context=trigger_context(trigger_id)),
                    "created_at": e.get("created_at"),
                    "expires_at": e.get("expires_at"),
                }
                for e in entries
            ]
            bind.execute(triggers.update().where(triggers.c.id == trigger_id).values(secrets=clear))
    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.drop_column("sealed_config")
