"""Initial schema: the seed's scheduler tables, what they reference, views and triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 20:14:09.405652
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Frozen copies of the column types (a migration must not change when db/models.py does).
TZ = sa.DateTime(timezone=True)
NOW = sa.text("CURRENT_TIMESTAMP")
JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TEXT_ARRAY = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
UUID_ARRAY = sa.JSON().with_variant(postgresql.ARRAY(sa.Uuid()), "postgresql")

# Tables with an updated_at column that PostgreSQL keeps current with a trigger.
UPDATED_AT_TABLES = (
    "brands",
    "products",
    "ad_templates",
    "scheduled_jobs",
    "scheduled_job_runs",
    "ad_runs",
    "export_deliveries",
)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _id() -> sa.Column:
    # The seed's DEFAULT gen_random_uuid() on PostgreSQL; the ORM supplies ids on SQLite.
    default = sa.text("gen_random_uuid()") if _is_postgres() else None
    return sa.Column("id", sa.Uuid(), server_default=default, nullable=False)


def upgrade() -> None:
    op.create_table(
        "brands",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("colors", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brands")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_brands_tenant_id_name")),
    )
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_brands_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "ad_templates",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("storage_name", sa.Text(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), server_default="library", nullable=False),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint("width > 0 AND height > 0", name=op.f("ck_ad_templates_size_positive")),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_ad_templates_brand_id_brands")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ad_templates")),
        sa.UniqueConstraint(
            "tenant_id", "storage_name", name=op.f("uq_ad_templates_tenant_id_storage_name")
        ),
    )
    with op.batch_alter_table("ad_templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ad_templates_brand_id"), ["brand_id"], unique=False)

    op.create_table(
        "products",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("key_benefits", sa.JSON(), nullable=False),
        sa.Column("brand_colors", sa.JSON(), nullable=False),
        sa.Column("image_paths", sa.JSON(), nullable=False),
        sa.Column("hooks", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name=op.f("fk_products_brand_id_brands")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index("ix_products_tenant_brand", ["tenant_id", "brand_id"], unique=False)

    op.create_table(
        "scheduled_jobs",
        _id(),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("schedule_type", sa.Text(), nullable=False),
        sa.Column("cron_expression", sa.Text(), nullable=True),
        sa.Column("scheduled_at", TZ, nullable=True),
        sa.Column("next_run_at", TZ, nullable=True),
        sa.Column("max_runs", sa.Integer(), nullable=True),
        sa.Column("runs_completed", sa.Integer(), server_default="0", nullable=True),
        sa.Column("status", sa.Text(), server_default="active", nullable=True),
        sa.Column("template_mode", sa.Text(), nullable=False),
        sa.Column("template_count", sa.Integer(), nullable=True),
        sa.Column("template_ids", TEXT_ARRAY, nullable=True),
        sa.Column("parameters", JSONB, nullable=False),
        sa.Column("created_at", TZ, server_default=NOW, nullable=True),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("jitter_seconds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("prefect_deployment_id", sa.Uuid(), nullable=True),
        sa.Column("deployment_name", sa.Text(), nullable=True),
        sa.Column("overlap_policy", sa.Text(), server_default="skip", nullable=False),
        sa.Column("misfire_grace_seconds", sa.Integer(), server_default="3600", nullable=False),
        sa.Column("exhausted_policy", sa.Text(), server_default="recycle", nullable=False),
        sa.Column("pause_note", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_consecutive_failures", sa.Integer(), server_default="3", nullable=False),
        sa.Column("last_run_at", TZ, nullable=True),
        sa.Column("resumed_at", TZ, nullable=True),
        sa.Column("deleted_at", TZ, nullable=True),
        sa.CheckConstraint(
            "exhausted_policy IN ('recycle', 'skip', 'fail')",
            name=op.f("ck_scheduled_jobs_exhausted_policy"),
        ),
        sa.CheckConstraint(
            "overlap_policy IN ('skip', 'queue')", name=op.f("ck_scheduled_jobs_overlap_policy")
        ),
        sa.CheckConstraint(
            "schedule_type IN ('one_time', 'recurring')",
            name=op.f("ck_scheduled_jobs_schedule_type"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'completed')", name=op.f("ck_scheduled_jobs_status")
        ),
        sa.CheckConstraint(
            "template_mode IN ('unused', 'specific', 'uploaded')",
            name=op.f("ck_scheduled_jobs_template_mode"),
        ),
        sa.CheckConstraint(
            "max_runs IS NULL OR max_runs >= 1", name=op.f("ck_scheduled_jobs_max_runs_positive")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_scheduled_jobs_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_jobs")),
        sa.UniqueConstraint(
            "prefect_deployment_id", name=op.f("uq_scheduled_jobs_prefect_deployment_id")
        ),
    )
    with op.batch_alter_table("scheduled_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_scheduled_jobs_brand", ["brand_id"], unique=False)
        batch_op.create_index("ix_scheduled_jobs_product", ["product_id"], unique=False)
        batch_op.create_index(
            "ix_scheduled_jobs_tenant_status", ["tenant_id", "status"], unique=False
        )
        batch_op.create_index(
            "uq_scheduled_jobs_tenant_name_live",
            ["tenant_id", "name"],
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        )

    op.create_table(
        "scheduled_job_runs",
        _id(),
        sa.Column("scheduled_job_id", sa.Uuid(), nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("completed_at", TZ, nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("ad_run_ids", UUID_ARRAY, nullable=True),
        sa.Column("templates_used", TEXT_ARRAY, nullable=True),
        sa.Column("logs", sa.Text(), nullable=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("flow_run_name", sa.Text(), nullable=True),
        sa.Column("scheduled_for", TZ, nullable=True),
        sa.Column("trigger", sa.Text(), server_default="schedule", nullable=False),
        sa.Column("prefect_state", sa.Text(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("slot_key", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'skipped', 'cancelled')",
            name=op.f("ck_scheduled_job_runs_status"),
        ),
        sa.CheckConstraint(
            "trigger IN ('schedule', 'manual')", name=op.f("ck_scheduled_job_runs_trigger")
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_job_id"],
            ["scheduled_jobs.id"],
            name=op.f("fk_scheduled_job_runs_scheduled_job_id_scheduled_jobs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_job_runs")),
        sa.UniqueConstraint("flow_run_id", name=op.f("uq_scheduled_job_runs_flow_run_id")),
        sa.UniqueConstraint("slot_key", name=op.f("uq_scheduled_job_runs_slot_key")),
    )
    with op.batch_alter_table("scheduled_job_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduled_job_runs_job_scheduled_for",
            ["scheduled_job_id", "scheduled_for"],
            unique=False,
        )
        batch_op.create_index(
            "ix_scheduled_job_runs_job_started", ["scheduled_job_id", "started_at"], unique=False
        )
        batch_op.create_index("ix_scheduled_job_runs_status", ["status"], unique=False)

    op.create_table(
        "ad_runs",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("template_storage_name", sa.Text(), nullable=False),
        sa.Column("scheduled_job_id", sa.Uuid(), nullable=True),
        sa.Column("scheduled_job_run_id", sa.Uuid(), nullable=True),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("parameters", JSONB, nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("completed_at", TZ, nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')",
            name=op.f("ck_ad_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_ad_runs_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_job_id"],
            ["scheduled_jobs.id"],
            name=op.f("fk_ad_runs_scheduled_job_id_scheduled_jobs"),
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_job_run_id"],
            ["scheduled_job_runs.id"],
            name=op.f("fk_ad_runs_scheduled_job_run_id_scheduled_job_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ad_runs")),
    )
    with op.batch_alter_table("ad_runs", schema=None) as batch_op:
        batch_op.create_index("ix_ad_runs_flow_run", ["flow_run_id"], unique=False)
        batch_op.create_index("ix_ad_runs_job_run", ["scheduled_job_run_id"], unique=False)
        batch_op.create_index(
            "ix_ad_runs_product_created", ["product_id", "created_at"], unique=False
        )

    op.create_table(
        "export_deliveries",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("ad_run_id", sa.Uuid(), nullable=True),
        sa.Column("scheduled_job_run_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("provider_message_id", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.Text(), nullable=True),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "channel IN ('email', 'slack')", name=op.f("ck_export_deliveries_channel")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')", name=op.f("ck_export_deliveries_status")
        ),
        sa.CheckConstraint(
            "(ad_run_id IS NULL) <> (scheduled_job_run_id IS NULL)",
            name=op.f("ck_export_deliveries_one_subject"),
        ),
        sa.ForeignKeyConstraint(
            ["ad_run_id"], ["ad_runs.id"], name=op.f("fk_export_deliveries_ad_run_id_ad_runs")
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_job_run_id"],
            ["scheduled_job_runs.id"],
            name=op.f("fk_export_deliveries_scheduled_job_run_id_scheduled_job_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_deliveries")),
        sa.UniqueConstraint(
            "ad_run_id", "channel", name=op.f("uq_export_deliveries_ad_run_id_channel")
        ),
        sa.UniqueConstraint(
            "scheduled_job_run_id",
            "channel",
            name=op.f("uq_export_deliveries_scheduled_job_run_id_channel"),
        ),
    )
    op.create_table(
        "generated_ads",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("ad_run_id", sa.Uuid(), nullable=False),
        sa.Column("variation_index", sa.Integer(), nullable=False),
        sa.Column("storage_path", sa.Text(), nullable=False),
        sa.Column("headline", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["ad_run_id"],
            ["ad_runs.id"],
            name=op.f("fk_generated_ads_ad_run_id_ad_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generated_ads")),
        sa.UniqueConstraint(
            "ad_run_id", "variation_index", name=op.f("uq_generated_ads_ad_run_id_variation_index")
        ),
    )
    op.create_table(
        "product_template_usage",
        _id(),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("template_storage_name", sa.Text(), nullable=False),
        sa.Column("used_at", TZ, server_default=NOW, nullable=True),
        sa.Column("ad_run_id", sa.Uuid(), nullable=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("use_count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("claimed_by_flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("claimed_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(
            ["ad_run_id"], ["ad_runs.id"], name=op.f("fk_product_template_usage_ad_run_id_ad_runs")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_product_template_usage_product_id_products"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_template_usage")),
        sa.UniqueConstraint(
            "product_id",
            "template_storage_name",
            name=op.f("uq_product_template_usage_product_id_template_storage_name"),
        ),
    )
    with op.batch_alter_table("product_template_usage", schema=None) as batch_op:
        batch_op.create_index(
            "ix_product_template_usage_claimed_by", ["claimed_by_flow_run_id"], unique=False
        )
        batch_op.create_index(
            "ix_product_template_usage_product_used_at", ["product_id", "used_at"], unique=False
        )

    _create_views()
    if _is_postgres():
        op.execute(
            """
            CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS TRIGGER AS $$
            BEGIN
                NEW.updated_at = NOW();
                RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        for table in UPDATED_AT_TABLES:
            op.execute(
                f"CREATE TRIGGER update_{table}_updated_at BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION update_updated_at_column()"
            )


def _create_views() -> None:
    recent = (
        "r.created_at > NOW() - INTERVAL '7 days'"
        if _is_postgres()
        else "r.created_at > datetime('now', '-7 days')"
    )
    op.execute(
        """
        CREATE VIEW v_active_scheduled_jobs AS
        SELECT j.id, j.tenant_id, j.name, j.brand_id, j.product_id, p.name AS product_name,
               j.schedule_type, j.cron_expression, j.timezone, j.scheduled_at, j.next_run_at,
               j.max_runs, j.runs_completed, j.template_mode, j.template_count,
               j.prefect_deployment_id, j.last_run_at, j.created_at
        FROM scheduled_jobs j
        JOIN products p ON p.id = j.product_id
        WHERE j.status = 'active' AND j.deleted_at IS NULL
        """
    )
    op.execute(
        f"""
        CREATE VIEW v_recent_job_runs AS
        SELECT r.id, r.tenant_id, r.scheduled_job_id, j.name AS job_name, j.product_id,
               j.brand_id, r.flow_run_id, r.trigger, r.status, r.prefect_state, r.skip_reason,
               r.scheduled_for, r.started_at, r.completed_at, r.error_message, r.ad_run_ids,
               r.templates_used, r.created_at
        FROM scheduled_job_runs r
        JOIN scheduled_jobs j ON j.id = r.scheduled_job_id
        WHERE {recent}
        """
    )


def downgrade() -> None:
    if _is_postgres():
        # An adopted database (the team's own, see db/adopt.py) keeps every table and column
        # that was there before the project came; only what the project added goes.
        from db.adopt import downgrade_adopted, is_adopted

        if is_adopted(op.get_bind()):
            downgrade_adopted(op.get_bind())
            return
    op.execute("DROP VIEW IF EXISTS v_recent_job_runs")
    op.execute("DROP VIEW IF EXISTS v_active_scheduled_jobs")
    if _is_postgres():
        for table in UPDATED_AT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS update_{table}_updated_at ON {table}")
        op.execute("DROP FUNCTION IF EXISTS update_updated_at_column()")
    with op.batch_alter_table("product_template_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_product_template_usage_product_used_at")
        batch_op.drop_index("ix_product_template_usage_claimed_by")

    op.drop_table("product_template_usage")
    op.drop_table("generated_ads")
    op.drop_table("export_deliveries")
    with op.batch_alter_table("ad_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_ad_runs_product_created")
        batch_op.drop_index("ix_ad_runs_job_run")
        batch_op.drop_index("ix_ad_runs_flow_run")

    op.drop_table("ad_runs")
    with op.batch_alter_table("scheduled_job_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_scheduled_job_runs_status")
        batch_op.drop_index("ix_scheduled_job_runs_job_started")
        batch_op.drop_index("ix_scheduled_job_runs_job_scheduled_for")

    op.drop_table("scheduled_job_runs")
    with op.batch_alter_table("scheduled_jobs", schema=None) as batch_op:
        batch_op.drop_index("uq_scheduled_jobs_tenant_name_live")
        batch_op.drop_index("ix_scheduled_jobs_tenant_status")
        batch_op.drop_index("ix_scheduled_jobs_product")
        batch_op.drop_index("ix_scheduled_jobs_brand")

    op.drop_table("scheduled_jobs")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_tenant_brand")

    op.drop_table("products")
    with op.batch_alter_table("ad_templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ad_templates_brand_id"))

    op.drop_table("ad_templates")
    with op.batch_alter_table("brands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_brands_tenant_id"))

    op.drop_table("brands")
