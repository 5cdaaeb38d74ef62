"""Catalog management: brands and products can be deactivated (`active`, default true).

A deactivated brand takes no new products and a deactivated product no new jobs; what exists
keeps working. Adopted databases get the same columns from the model (`db.adopt._add_columns`
adds every model column an adopted table lacks, with its server default).

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("brands", "products")


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy) on both databases: SQLite adds a column with a constant
    # default in place, and copying `products` would break the seed views that read it.
    for table in TABLES:
        op.add_column(
            table, sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place too, unless something refers to it.
    for table in TABLES:
        op.drop_column(table, "active")
