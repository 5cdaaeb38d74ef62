"""Templates set aside after failing for a reason of their own (missing, unreadable, rejected).

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-29 20:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ad_templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inactive_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ad_templates", schema=None) as batch_op:
        batch_op.drop_column("inactive_reason")
