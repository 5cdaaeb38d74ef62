"""Job board at scale: each ad's board thumbnail is kept, and refreshes are coalesced per tenant.

- `generated_ads.board_thumbnail`: the board's picture of the ad (a small JPEG data URI), made
  once, so a board refresh no longer reads and decodes every full-size ad it shows;
- `job_board_refreshes`: per tenant, how many refreshes were asked for, how many the latest
  published board covers and when it was published, and which process is refreshing it until
  when.

Adopted databases get the same from the models (db/adopt.py creates missing tables and columns
from `db.models`).

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy): a nullable column is added in place on both databases.
    op.add_column("generated_ads", sa.Column("board_thumbnail", sa.Text(), nullable=True))
    op.create_table(
        "job_board_refreshes",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("requested", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("published", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("published_at", TZ, nullable=True),
        sa.Column("holder", sa.Uuid(), nullable=True),
        sa.Column("lease_until", TZ, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_job_board_refreshes")),
    )


def downgrade() -> None:
    op.drop_table("job_board_refreshes")
    op.drop_column("generated_ads", "board_thumbnail")
