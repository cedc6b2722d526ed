"""example pipelines: processed documents and the searchable product index

Revision ID: 0006
Revises: 0001

The product index is searched with the store's own full-text search: an FTS5 table beside it on SQLite, a
GIN index over the same tsvector expression the search uses on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_DOCUMENT = (
    "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(description, '') || ' ' || "
    "coalesce(category, '') || ' ' || coalesce(keywords, '') || ' ' || sku)"
)
"""The tsvector PostgreSQL searches; examples/pipelines/products.py repeats it so the index is used."""


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=63), nullable=False),
        sa.Column("execution_id", sa.String(length=255), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("document_class", sa.String(length=32), nullable=False),
        sa.Column("invoice_number", sa.String(length=128), nullable=True),
        sa.Column("total", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("execution_id"),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_documents_invoice_number"), ["invoice_number"], unique=False)
    op.create_table(
        "indexed_products",
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("execution_id", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("category", sa.String(length=128), nullable=True),
        sa.Column("keywords", sa.String(), nullable=False),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sku"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_indexed_products_search ON indexed_products USING gin ({PG_DOCUMENT})")
    else:
        # Porter stemming, as PostgreSQL's 'english' configuration does, so "chairs" finds "chair" on both.
        op.execute(
            "CREATE VIRTUAL TABLE indexed_products_fts USING fts5("
            "sku UNINDEXED, title, description, category, keywords, tokenize = 'porter unicode61')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_indexed_products_search")
    else:
        op.execute("DROP TABLE IF EXISTS indexed_products_fts")
    op.drop_table("indexed_products")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_invoice_number"))
    op.drop_table("documents")
