"""SQLAlchemy 2 models: the seed's scheduler tables plus what they reference.

The three seed tables (`scheduled_jobs`, `scheduled_job_runs`, `product_template_usage`) keep
every seed column, default and CHECK; the columns added here are marked "added". The tables they
reference (`products`, `ad_runs`) and the rest (brands, the template catalog, generated ads,
export deliveries) are this project's. Every table carries `tenant_id`.

See https://docs.sqlalchemy.org/en/20/orm/declarative_tables.html for the typed `Mapped` style.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.types import JSONType, UTCDateTime, UUIDList, text_array, utcnow
from domain.approval import APPROVAL_STATUSES
from domain.vocab import (
    AD_RUN_STATUSES,
    DELIVERY_STATUSES,
    EXHAUSTED_POLICIES,
    EXPORT_CHANNELS,
    JOB_STATUSES,
    OVERLAP_POLICIES,
    RUN_STATUSES,
    RUN_TRIGGERS,
    SCHEDULE_TYPES,
    TEMPLATE_MODES,
)

# Constraint names follow one convention so that Alembic can drop them by name on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    # The CHECK constraints' SQL is generated from the vocabularies; its text must stay exactly
    # what the migrations wrote ("status IN ('active', 'paused', 'completed')").
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base with the shared naming convention and type map."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class TimestampMixin:
    """`created_at` / `updated_at`, kept by the ORM (and by a trigger on PostgreSQL)."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class Brand(TimestampMixin, Base):
    """A brand: owns products and, optionally, brand-scoped templates."""

    __tablename__ = "brands"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(index=True)
    name: Mapped[str] = mapped_column(sa.Text)
    colors: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    #: False once deactivated: no new products under it (added, revision 0006).
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())


class Product(TimestampMixin, Base):
    """A product ads are made for."""

    __tablename__ = "products"
    __table_args__ = (sa.Index("ix_products_tenant_brand", "tenant_id", "brand_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID]
    brand_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("brands.id"))
    name: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    key_benefits: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    #: Hex colours ("#1a2b3c"); the colour mode "brand" draws from them.
    brand_colors: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    #: Storage paths of product photos; the image mode picks one.
    image_paths: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    #: Ready-made headlines/hooks; the content source "hooks" draws from them.
    hooks: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    #: False once deactivated: no new jobs for it; its jobs keep running (added, revision 0006).
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())

    brand: Mapped[Brand] = relationship(lazy="raise")


class AdTemplate(TimestampMixin, Base):
    """An ad template in the catalog, identified by its storage name (unique per tenant)."""

    __tablename__ = "ad_templates"
    __table_args__ = (
        # Serves the unused-template claim: an ordered scan of one tenant's active templates.
        sa.UniqueConstraint("tenant_id", "storage_name"),
        sa.CheckConstraint("width > 0 AND height > 0", name="size_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID]
    storage_name: Mapped[str] = mapped_column(sa.Text)
    brand_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("brands.id"), index=True)
    name: Mapped[str] = mapped_column(sa.Text, default="")
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    #: Why an inactive template is out of rotation: its file vanished from storage, or a run set
    #: it aside after it failed for a reason of its own (added, revision 0003). `templates sync`
    #: (file present again) or `templates enable` puts it back and clears this.
    inactive_reason: Mapped[str | None] = mapped_column(sa.Text)
    width: Mapped[int] = mapped_column(default=1080)
    height: Mapped[int] = mapped_column(default=1080)
    tags: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    #: "library" for the shared catalog, "uploaded" for templates uploaded with one job.
    source: Mapped[str] = mapped_column(sa.Text, default="library", server_default="library")


class ScheduledJob(Base):
    """Seed table `scheduled_jobs`: one scheduled job, mirrored by one Prefect deployment."""

    __tablename__ = "scheduled_jobs"
    __table_args__ = (
        sa.CheckConstraint(_in("schedule_type", SCHEDULE_TYPES), name="schedule_type"),
        sa.CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        sa.CheckConstraint(_in("template_mode", TEMPLATE_MODES), name="template_mode"),
        sa.CheckConstraint(_in("overlap_policy", OVERLAP_POLICIES), name="overlap_policy"),
        sa.CheckConstraint(_in("exhausted_policy", EXHAUSTED_POLICIES), name="exhausted_policy"),
        sa.CheckConstraint("max_runs IS NULL OR max_runs >= 1", name="max_runs_positive"),
        sa.Index("ix_scheduled_jobs_tenant_status", "tenant_id", "status"),
        # One live job per name and tenant (deleted jobs keep their names in history).
        sa.Index(
            "uq_scheduled_jobs_tenant_name_live",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        ),
        sa.Index("ix_scheduled_jobs_product", "product_id"),
        sa.Index("ix_scheduled_jobs_brand", "brand_id"),
    )

    # -- seed columns --
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    product_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("products.id"))
    brand_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(sa.Text)
    schedule_type: Mapped[str] = mapped_column(sa.Text)
    cron_expression: Mapped[str | None] = mapped_column(sa.Text)
    scheduled_at: Mapped[datetime | None]
    next_run_at: Mapped[datetime | None]
    max_runs: Mapped[int | None]
    runs_completed: Mapped[int | None] = mapped_column(default=0, server_default="0")
    status: Mapped[str | None] = mapped_column(sa.Text, default="active", server_default="active")
    template_mode: Mapped[str] = mapped_column(sa.Text)
    template_count: Mapped[int | None]
    template_ids: Mapped[list[str] | None] = mapped_column(text_array())
    parameters: Mapped[dict[str, Any]]
    created_at: Mapped[datetime | None] = mapped_column(
        default=utcnow, server_default=sa.func.now()
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    tenant_id: Mapped[uuid.UUID | None]

    # -- added --
    timezone: Mapped[str] = mapped_column(sa.Text, default="UTC", server_default="UTC")
    jitter_seconds: Mapped[int] = mapped_column(default=0, server_default="0")
    description: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    prefect_deployment_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    deployment_name: Mapped[str | None] = mapped_column(sa.Text)
    overlap_policy: Mapped[str] = mapped_column(sa.Text, default="skip", server_default="skip")
    misfire_grace_seconds: Mapped[int] = mapped_column(default=3600, server_default="3600")
    #: What `unused` mode does when the product has used every template.
    exhausted_policy: Mapped[str] = mapped_column(
        sa.Text, default="recycle", server_default="recycle"
    )
    pause_note: Mapped[str | None] = mapped_column(sa.Text)
    consecutive_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    max_consecutive_failures: Mapped[int] = mapped_column(default=3, server_default="3")
    last_run_at: Mapped[datetime | None]
    #: When the job was last resumed: failures before it no longer count toward a pause.
    resumed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    product: Mapped[Product] = relationship(lazy="raise")


class ScheduledJobRun(Base):
    """Seed table `scheduled_job_runs`: one row per Prefect flow run of a job (the run mirror)."""

    __tablename__ = "scheduled_job_runs"
    __table_args__ = (
        sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        sa.CheckConstraint(_in("trigger", RUN_TRIGGERS), name="trigger"),
        sa.Index("ix_scheduled_job_runs_job_started", "scheduled_job_id", "started_at"),
        sa.Index("ix_scheduled_job_runs_job_scheduled_for", "scheduled_job_id", "scheduled_for"),
        sa.Index("ix_scheduled_job_runs_status", "status"),
    )

    # -- seed columns --
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    scheduled_job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("scheduled_jobs.id"))
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    status: Mapped[str | None] = mapped_column(sa.Text, default="pending", server_default="pending")
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    ad_run_ids: Mapped[list[uuid.UUID] | None] = mapped_column(UUIDList())
    templates_used: Mapped[list[str] | None] = mapped_column(text_array())
    logs: Mapped[str | None] = mapped_column(sa.Text)
    tenant_id: Mapped[uuid.UUID | None]

    # -- added --
    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    flow_run_name: Mapped[str | None] = mapped_column(sa.Text)
    scheduled_for: Mapped[datetime | None]
    trigger: Mapped[str] = mapped_column(sa.Text, default="schedule", server_default="schedule")
    #: Prefect's own state name ("Completed", "Crashed", "Cancelled", "Late", …).
    prefect_state: Mapped[str | None] = mapped_column(sa.Text)
    #: Why a run was skipped ("misfire", "duplicate_slot", "overlap", "no_templates").
    skip_reason: Mapped[str | None] = mapped_column(sa.Text)
    #: "<job id>:<scheduled time>" while this run owns its schedule slot; NULL otherwise. Unique,
    #: so two runs for the same slot cannot both proceed.
    slot_key: Mapped[str | None] = mapped_column(sa.Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class ProductTemplateUsage(Base):
    """Seed table `product_template_usage`: which templates a product has used (or holds).

    A row with `use_count = 0` is a claim on a never-used template by an in-flight run; a row
    with `claimed_by_flow_run_id` set and `use_count > 0` is a claim on a recycled template.
    """

    __tablename__ = "product_template_usage"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "template_storage_name"),
        # Least-recently-used recycling scans a product's rows by last use.
        sa.Index("ix_product_template_usage_product_used_at", "product_id", "used_at"),
        sa.Index("ix_product_template_usage_claimed_by", "claimed_by_flow_run_id"),
    )

    # -- seed columns --
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    product_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("products.id"))
    template_storage_name: Mapped[str] = mapped_column(sa.Text)
    used_at: Mapped[datetime | None] = mapped_column(default=utcnow, server_default=sa.func.now())
    ad_run_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("ad_runs.id"))
    tenant_id: Mapped[uuid.UUID | None]

    # -- added --
    use_count: Mapped[int] = mapped_column(default=1, server_default="1")
    claimed_by_flow_run_id: Mapped[uuid.UUID | None]
    claimed_at: Mapped[datetime | None]


class AdRun(TimestampMixin, Base):
    """One ad run: one template for one product in one flow run, N variations."""

    __tablename__ = "ad_runs"
    __table_args__ = (
        sa.CheckConstraint(_in("status", AD_RUN_STATUSES), name="status"),
        sa.Index("ix_ad_runs_job_run", "scheduled_job_run_id"),
        sa.Index("ix_ad_runs_flow_run", "flow_run_id"),
        sa.Index("ix_ad_runs_product_created", "product_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID]
    product_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("products.id"))
    template_storage_name: Mapped[str] = mapped_column(sa.Text)
    scheduled_job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("scheduled_jobs.id"))
    scheduled_job_run_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("scheduled_job_runs.id")
    )
    flow_run_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(sa.Text, default="pending", server_default="pending")
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    ads: Mapped[list[GeneratedAd]] = relationship(
        back_populates="ad_run", lazy="raise", order_by="GeneratedAd.variation_index"
    )


class GeneratedAd(Base):
    """One generated ad image: one variation of an ad run."""

    __tablename__ = "generated_ads"
    __table_args__ = (sa.UniqueConstraint("ad_run_id", "variation_index"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID]
    ad_run_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("ad_runs.id", ondelete="CASCADE"))
    variation_index: Mapped[int]
    storage_path: Mapped[str] = mapped_column(sa.Text)
    headline: Mapped[str] = mapped_column(sa.Text, default="")
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int]
    content_type: Mapped[str] = mapped_column(sa.Text, default="image/png")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    #: Approval (revision 0005): "approved"/"rejected" once decided; NULL when not reviewed.
    #: A rejected ad stays in storage and is never exported.
    review_status: Mapped[str | None] = mapped_column(sa.Text)
    #: The job board's picture of this ad (revision 0007): a `data:image/jpeg;base64,…` URI of
    #: at most `flows.thumbnails.BOARD_THUMBNAIL_MAX_BYTES`, made once (from the bytes the run
    #: held, or read back the first time a board shows the ad) so that no board refresh decodes
    #: full-size ads again. NULL until made.
    board_thumbnail: Mapped[str | None] = mapped_column(sa.Text)

    ad_run: Mapped[AdRun] = relationship(back_populates="ads", lazy="raise")


class ExportDelivery(TimestampMixin, Base):
    """One export of an ad run (or, for digests, a job run) to one channel."""

    __tablename__ = "export_deliveries"
    __table_args__ = (
        sa.CheckConstraint(_in("channel", EXPORT_CHANNELS), name="channel"),
        sa.CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        sa.CheckConstraint(
            "(ad_run_id IS NULL) <> (scheduled_job_run_id IS NULL)", name="one_subject"
        ),
        sa.UniqueConstraint("ad_run_id", "channel"),
        sa.UniqueConstraint("scheduled_job_run_id", "channel"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID]
    ad_run_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("ad_runs.id"))
    scheduled_job_run_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("scheduled_job_runs.id")
    )
    channel: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, default="pending", server_default="pending")
    provider_message_id: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    #: "permanent" (reconfigure, do not retry) or "retryable".
    error_kind: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[datetime | None]


class RunApproval(TimestampMixin, Base):
    """The approval of one job run (revision 0005): what waits, and the decision once made.

    One row per `scheduled_job_runs` row whose job asks for approval, written when the run
    suspends (`awaiting`) and settled once (`approved`, `rejected`, `partial`, `timed_out`).
    """

    __tablename__ = "run_approvals"
    __table_args__ = (
        sa.CheckConstraint(_in("status", APPROVAL_STATUSES), name="status"),
        sa.CheckConstraint(_in("on_timeout", ("discard", "export")), name="on_timeout"),
        sa.Index("ix_run_approvals_tenant_status", "tenant_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID]
    scheduled_job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("scheduled_jobs.id"))
    scheduled_job_run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("scheduled_job_runs.id"), unique=True
    )
    flow_run_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(sa.Text, default="awaiting", server_default="awaiting")
    #: The ads awaiting a decision (`generated_ads.id`), in display order.
    ad_ids: Mapped[list[uuid.UUID]] = mapped_column(UUIDList())
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime]
    on_timeout: Mapped[str] = mapped_column(sa.Text)
    approved_ad_ids: Mapped[list[uuid.UUID] | None] = mapped_column(UUIDList())
    rejected_ad_ids: Mapped[list[uuid.UUID] | None] = mapped_column(UUIDList())
    note: Mapped[str | None] = mapped_column(sa.Text)
    decided_by: Mapped[str | None] = mapped_column(sa.Text)
    #: "ui" (the Prefect resume form), "sdk" (SDK/CLI), "timeout" or "run_ended".
    decided_via: Mapped[str | None] = mapped_column(sa.Text)
    decided_at: Mapped[datetime | None]
    #: When the approved ads were handed to the export step (exactly once).
    exported_at: Mapped[datetime | None]


class JobBoardRefresh(Base):
    """How far a tenant's job board is behind, and who is refreshing it (revision 0007).

    Every change and every run asks for a refresh (`requested` goes up by one); one process at
    a time holds the refresh (`holder` until `lease_until`) and publishes boards until what it
    read covers every request (`published`). Requests that arrive meanwhile are folded into the
    holder's next round instead of each re-reading and re-publishing the whole board: a burst of
    a hundred runs of one tenant publishes a handful of boards, not a hundred.
    """

    __tablename__ = "job_board_refreshes"

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    #: Requests so far (a counter, not a time: no clock is compared across machines).
    requested: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    #: The value of `requested` that the latest published board read covers.
    published: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    #: When the latest board was published.
    published_at: Mapped[datetime | None]
    #: The process refreshing the board now (a random token), or NULL.
    holder: Mapped[uuid.UUID | None]
    #: When the holder's claim lapses (a holder that died is replaced after this).
    lease_until: Mapped[datetime | None]
