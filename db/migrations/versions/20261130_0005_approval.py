"""Approval before export: `awaiting_approval` runs, the decision store, rejected ads.

- `scheduled_job_runs.status` also allows `awaiting_approval` (the seed's values are kept);
- `run_approvals`: one row per run that waits for a decision, and the decision once made
  (which ads were approved or rejected, the note, who, when, via what, the timeout outcome);
- `generated_ads.review_status`: `approved` / `rejected` once decided (a rejected ad stays in
  storage and is never exported).

Adopted databases get the same from the models (db/adopt.py creates missing tables, columns and
CHECKs from `db.models`), so the adoption path needs no code of its own.

Revision ID: 0005
Revises: 0006 (written against 0004; re-chained after main added 0006)
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0006"  # re-chained after main's 0006 (catalog_active)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies (a migration must not change when db/models.py does).
TZ = sa.DateTime(timezone=True)
NOW = sa.text("CURRENT_TIMESTAMP")
UUID_ARRAY = sa.JSON().with_variant(postgresql.ARRAY(sa.Uuid()), "postgresql")
RUN_STATUS_CHECK = "ck_scheduled_job_runs_status"
# Spelled out in full: the models generate the same SQL text (tests/unit/test_vocab.py).
NEW_RUN_STATUS_CHECK = "status IN ('pending', 'running', 'completed', 'failed', 'skipped', 'cancelled', 'awaiting_approval')"  # noqa: E501
OLD_RUN_STATUS_CHECK = (
    "status IN ('pending', 'running', 'completed', 'failed', 'skipped', 'cancelled')"
)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _set_run_statuses(check: str) -> None:
    """Replace the run status CHECK (batch: SQLite copies the table, PostgreSQL alters it).

    SQLite refuses to rename the copy back while a view names the table, so its views over
    `scheduled_job_runs` are dropped around the copy and re-created from their own SQL.
    """
    views: list[tuple[str, str]] = []
    if not _is_postgres():
        views = [
            (str(name), str(sql))
            for name, sql in op.get_bind().execute(
                sa.text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'view' "
                    "AND sql LIKE '%scheduled_job_runs%'"
                )
            )
        ]
        for name, _sql in views:
            op.execute(f'DROP VIEW "{name}"')
    with op.batch_alter_table("scheduled_job_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(RUN_STATUS_CHECK), type_="check")
        batch_op.create_check_constraint(op.f(RUN_STATUS_CHECK), check)
    for _name, sql in views:
        op.execute(sql)


def upgrade() -> None:
    _set_run_statuses(NEW_RUN_STATUS_CHECK)
    with op.batch_alter_table("generated_ads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_status", sa.Text(), nullable=True))

    default_id = sa.text("gen_random_uuid()") if _is_postgres() else None
    op.create_table(
        "run_approvals",
        sa.Column("id", sa.Uuid(), server_default=default_id, nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("scheduled_job_id", sa.Uuid(), nullable=False),
        sa.Column("scheduled_job_run_id", sa.Uuid(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), server_default="awaiting", nullable=False),
        sa.Column("ad_ids", UUID_ARRAY, nullable=False),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("deadline_at", TZ, nullable=False),
        sa.Column("on_timeout", sa.Text(), nullable=False),
        sa.Column("approved_ad_ids", UUID_ARRAY, nullable=True),
        sa.Column("rejected_ad_ids", UUID_ARRAY, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_via", sa.Text(), nullable=True),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("exported_at", TZ, nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('awaiting', 'approved', 'rejected', 'partial', 'timed_out')",
            name=op.f("ck_run_approvals_status"),
        ),
        sa.CheckConstraint(
            "on_timeout IN ('discard', 'export')", name=op.f("ck_run_approvals_on_timeout")
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_job_id"],
            ["scheduled_jobs.id"],
            name=op.f("fk_run_approvals_scheduled_job_id_scheduled_jobs"),
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_job_run_id"],
            ["scheduled_job_runs.id"],
            name=op.f("fk_run_approvals_scheduled_job_run_id_scheduled_job_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_approvals")),
        sa.UniqueConstraint("flow_run_id", name=op.f("uq_run_approvals_flow_run_id")),
        sa.UniqueConstraint(
            "scheduled_job_run_id", name=op.f("uq_run_approvals_scheduled_job_run_id")
        ),
    )
    with op.batch_alter_table("run_approvals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_run_approvals_tenant_status", ["tenant_id", "status"], unique=False
        )
    if _is_postgres():
        # The function exists since revision 0001 (it keeps every updated_at current).
        op.execute(
            "CREATE TRIGGER update_run_approvals_updated_at BEFORE UPDATE ON run_approvals "
            "FOR EACH ROW EXECUTE FUNCTION update_updated_at_column()"
        )


def downgrade() -> None:
    op.drop_table("run_approvals")
    with op.batch_alter_table("generated_ads", schema=None) as batch_op:
        batch_op.drop_column("review_status")
    # A run still waiting for a decision can only be shown as running by the older code.
    op.execute(
        "UPDATE scheduled_job_runs SET status = 'running' WHERE status = 'awaiting_approval'"
    )
    _set_run_statuses(OLD_RUN_STATUS_CHECK)
