"""Export deliveries: an `unconfirmed` status ("sent, not recorded — check").

A send whose outcome could not be recorded (the database was unreachable when the provider had
accepted it) is never repeated automatically on a channel without idempotency (Slack); it is set
`unconfirmed` for a person to check instead.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_export_deliveries_status"


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a CHECK in place (the table is copied); PostgreSQL alters.
    with op.batch_alter_table("export_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(NAME), type_="check")
        batch_op.create_check_constraint(
            op.f(NAME), "status IN ('pending', 'sent', 'failed', 'unconfirmed')"
        )


def downgrade() -> None:
    # An unconfirmed delivery may have gone out: keep it from being sent again by counting it sent.
    op.execute("UPDATE export_deliveries SET status = 'sent' WHERE status = 'unconfirmed'")
    with op.batch_alter_table("export_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(NAME), type_="check")
        batch_op.create_check_constraint(op.f(NAME), "status IN ('pending', 'sent', 'failed')")
