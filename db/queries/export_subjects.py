"""Queries behind the `ad-scheduler export` command: what a run id names, and what went out.

Every function returns read models (`db.read_models`), never ORM rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AdRun, ExportDelivery, ScheduledJob, ScheduledJobRun
from db.read_models import AdRunView, DeliveryView, JobRunView, JobView
from domain.vocab import DELIVERY_OUT_STATUSES


@dataclass(frozen=True)
class ExportSubject:
    """What a run id names: an ad run, or else a job run; and the job of either (if any)."""

    ad_run: AdRunView | None
    job_run: JobRunView | None
    job: JobView | None


async def find_export_subject(
    session: AsyncSession, run_id: uuid.UUID, tenant_id: uuid.UUID
) -> ExportSubject | None:
    """The tenant's ad run with id `run_id`, or else its job run with that id or flow run id,
    with the job either belongs to; None when the tenant has neither."""
    ad_run = await session.scalar(
        sa.select(AdRun).where(AdRun.id == run_id, AdRun.tenant_id == tenant_id)
    )
    job_run = None
    if ad_run is None:
        job_run = await session.scalar(
            sa.select(ScheduledJobRun).where(
                sa.or_(ScheduledJobRun.id == run_id, ScheduledJobRun.flow_run_id == run_id),
                ScheduledJobRun.tenant_id == tenant_id,
            )
        )
        if job_run is None:
            return None
    job_id = job_run.scheduled_job_id if job_run is not None else ad_run and ad_run.scheduled_job_id
    job = await session.get(ScheduledJob, job_id) if job_id is not None else None
    return ExportSubject(
        ad_run=AdRunView.of(ad_run) if ad_run is not None else None,
        job_run=JobRunView.of(job_run) if job_run is not None else None,
        job=JobView.of(job) if job is not None else None,
    )


async def deliveries_out(
    session: AsyncSession,
    channel: str,
    *,
    ad_run_ids: Sequence[uuid.UUID],
    job_run_id: uuid.UUID | None,
) -> list[DeliveryView]:
    """Deliveries to `channel` that went out (or may have), oldest first: the job run's digest
    when `job_run_id` is given, else those of the ad runs."""
    subject = (
        ExportDelivery.scheduled_job_run_id == job_run_id
        if job_run_id is not None
        else ExportDelivery.ad_run_id.in_(list(ad_run_ids))
    )
    rows = await session.scalars(
        sa.select(ExportDelivery)
        .where(
            subject,
            ExportDelivery.channel == channel,
            ExportDelivery.status.in_(DELIVERY_OUT_STATUSES),
        )
        .order_by(ExportDelivery.created_at)
    )
    return [DeliveryView.of(row) for row in rows.all()]
