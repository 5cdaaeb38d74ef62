"""Queries over generated ads, for display (the demo's list of what a job made)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AdRun, GeneratedAd


@dataclass(frozen=True)
class MadeAd:
    """One generated ad: the template it came from and where its image is stored."""

    template_storage_name: str
    storage_path: str


async def ads_of_job(session: AsyncSession, job_id: uuid.UUID) -> list[MadeAd]:
    """Every ad the job generated, in run order then variation order."""
    rows = await session.execute(
        sa.select(AdRun.template_storage_name, GeneratedAd.storage_path)
        .join(GeneratedAd, GeneratedAd.ad_run_id == AdRun.id)
        .where(AdRun.scheduled_job_id == job_id)
        .order_by(AdRun.created_at, GeneratedAd.variation_index)
    )
    return [MadeAd(template, path) for template, path in rows.all()]
