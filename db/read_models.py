"""Typed read models: what the SDK returns and the CLI prints, detached from the ORM session.

Each model is a frozen pydantic copy of one row (`Model.of(row)`), so a caller never touches a
lazy attribute of a closed session and never writes a row by accident. Field names are the
columns' own; their meaning is documented on `db.models`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class ReadModel(BaseModel):
    """Base: built from an ORM row by attribute, immutable."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    @classmethod
    def of(cls, row: object) -> Self:
        """The read model of one ORM row (or any object with the same attributes)."""
        return cls.model_validate(row, from_attributes=True)


class JobView(ReadModel):
    """One `scheduled_jobs` row (see `db.models.ScheduledJob`); times are aware UTC."""

    id: uuid.UUID
    tenant_id: uuid.UUID | None
    product_id: uuid.UUID
    brand_id: uuid.UUID
    name: str
    description: str
    schedule_type: str
    cron_expression: str | None
    timezone: str
    jitter_seconds: int
    scheduled_at: datetime | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    max_runs: int | None
    runs_completed: int | None
    status: str | None
    pause_note: str | None
    template_mode: str
    template_count: int | None
    template_ids: list[str] | None
    exhausted_policy: str
    parameters: dict[str, Any]
    overlap_policy: str
    misfire_grace_seconds: int
    consecutive_failures: int | None
    max_consecutive_failures: int
    prefect_deployment_id: uuid.UUID | None
    deployment_name: str | None
    resumed_at: datetime | None
    deleted_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class LegacyJobView(ReadModel):
    """A `scheduled_jobs` row as `jobs adopt` reads it: the old scheduler page's columns, taken
    as stored (any JSON in `parameters`, columns the old page may have left empty), so that
    `scheduler.adopt` can report what it cannot read row by row."""

    id: uuid.UUID
    name: str
    product_id: uuid.UUID | None
    schedule_type: str | None
    cron_expression: str | None
    scheduled_at: datetime | None
    max_runs: int | None
    runs_completed: int | None
    status: str | None
    template_mode: str | None
    template_count: int | None
    template_ids: list[str] | None
    parameters: Any


class JobRunView(ReadModel):
    """One `scheduled_job_runs` row: a flow run of a job (see `db.models.ScheduledJobRun`)."""

    id: uuid.UUID
    scheduled_job_id: uuid.UUID
    tenant_id: uuid.UUID | None
    flow_run_id: uuid.UUID | None
    flow_run_name: str | None
    trigger: str
    status: str | None
    prefect_state: str | None
    scheduled_for: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    templates_used: list[str] | None
    ad_run_ids: list[uuid.UUID] | None
    error_message: str | None
    skip_reason: str | None
    created_at: datetime | None


class BrandView(ReadModel):
    """One brand: its name, colours (hex) and whether new products may use it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    colors: list[str]
    active: bool


class ProductView(ReadModel):
    """One product with its brand's name (for display)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    brand_name: str
    name: str
    description: str
    key_benefits: list[str]
    brand_colors: list[str]
    image_paths: list[str]
    hooks: list[str]
    active: bool


class TemplateView(ReadModel):
    """One catalog template; `inactive_reason` says why an inactive one is out of rotation."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    storage_name: str
    name: str
    brand_id: uuid.UUID | None
    width: int
    height: int
    tags: list[str]
    source: str
    active: bool
    inactive_reason: str | None


class RunApprovalView(ReadModel):
    """The approval of one job run (`run_approvals`, see `db.models.RunApproval`).

    `status` is `awaiting` until settled, then `approved`, `rejected`, `partial` or `timed_out`;
    `decided_via` is `ui`, `sdk`, `timeout` or `run_ended`. Ad ids are `generated_ads.id`;
    times are aware UTC; `note` is the reviewer's free text, unescaped (escape it for display).
    """

    id: uuid.UUID
    tenant_id: uuid.UUID
    scheduled_job_id: uuid.UUID
    scheduled_job_run_id: uuid.UUID
    flow_run_id: uuid.UUID
    status: str
    ad_ids: list[uuid.UUID]
    requested_at: datetime
    deadline_at: datetime
    on_timeout: str
    approved_ad_ids: list[uuid.UUID] | None
    rejected_ad_ids: list[uuid.UUID] | None
    note: str | None
    decided_by: str | None
    decided_via: str | None
    decided_at: datetime | None
    exported_at: datetime | None

    @property
    def approved_count(self) -> int:
        """How many ads were approved (0 while awaiting)."""
        return len(self.approved_ad_ids or ())

    @property
    def rejected_count(self) -> int:
        """How many ads were rejected (0 while awaiting)."""
        return len(self.rejected_ad_ids or ())


class AdRunView(ReadModel):
    """One `ad_runs` row: one template's generation (see `db.models.AdRun`)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    product_id: uuid.UUID
    template_storage_name: str
    scheduled_job_id: uuid.UUID | None
    scheduled_job_run_id: uuid.UUID | None
    flow_run_id: uuid.UUID | None
    status: str
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None


class DeliveryView(ReadModel):
    """One `export_deliveries` row: a channel's send of an ad run or a job run's digest.

    `status` is one of `domain.vocab.DELIVERY_STATUSES`; `sent_at` is aware UTC.
    """

    id: uuid.UUID
    tenant_id: uuid.UUID
    ad_run_id: uuid.UUID | None
    scheduled_job_run_id: uuid.UUID | None
    channel: str
    status: str
    provider_message_id: str | None
    attempts: int
    error_message: str | None
    error_kind: str | None
    sent_at: datetime | None
    created_at: datetime | None
