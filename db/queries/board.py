"""What the job board shows: every live job of a tenant, its last run and latest ads, and per
product how many templates it has used and has left.

Reads only, a fixed number of queries whatever the number of jobs (no query per job): the board is
re-read after every change and every run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import (
    AdRun,
    Brand,
    GeneratedAd,
    Product,
    ProductTemplateUsage,
    ScheduledJob,
    ScheduledJobRun,
)
from db.queries.templates import unused_templates_query

#: Ads of a job's latest run shown on the board (the rest are counted, not shown).
ADS_PER_JOB = 4


@dataclass(frozen=True)
class BoardAd:
    """One ad of a job's latest run that made ads.

    `thumbnail` is its stored board picture (`generated_ads.board_thumbnail`), None until made.
    """

    storage_path: str
    headline: str
    template: str
    ad_id: uuid.UUID
    thumbnail: str | None = None


@dataclass(frozen=True)
class BoardRun:
    """A job's most recent run (any status)."""

    flow_run_id: uuid.UUID | None
    flow_run_name: str | None
    status: str | None
    prefect_state: str | None
    trigger: str
    started_at: datetime | None
    completed_at: datetime | None
    #: The whole reason a run failed or partly failed (never cut here).
    error_message: str | None
    skip_reason: str | None
    #: The run's note (what it made, what it set aside, why it was skipped).
    logs: str | None


@dataclass(frozen=True)
class BoardJob:
    """One live job as the board shows it.

    Times are UTC; `timezone` is the job's IANA zone the board shows them in.
    """

    id: uuid.UUID
    name: str
    brand: str
    product: str
    product_id: uuid.UUID
    status: str
    pause_note: str | None
    schedule_type: str
    cron_expression: str | None
    scheduled_at: datetime | None
    timezone: str
    runs_completed: int
    max_runs: int | None
    next_run_at: datetime | None
    template_mode: str
    deployment_name: str | None
    prefect_deployment_id: uuid.UUID | None
    last_run: BoardRun | None = None
    #: Ads of the latest completed run (at most `ADS_PER_JOB`), and when that run started.
    latest_ads: list[BoardAd] = field(default_factory=list)
    latest_ads_total: int = 0
    latest_ads_run_at: datetime | None = None


@dataclass(frozen=True)
class ProductTemplates:
    """How far a product is through its template library.

    Attributes:
        used: Templates the product has used at least once (library or not, active or not).
        unused: Active library templates available to it (global or of its brand) it never used:
            what `unused` mode can still pick.
    """

    product_id: uuid.UUID
    brand: str
    product: str
    used: int
    unused: int


@dataclass(frozen=True)
class Board:
    """Everything on one tenant's job board."""

    tenant_id: uuid.UUID
    jobs: list[BoardJob]
    products: list[ProductTemplates]


async def read_board(session: AsyncSession, tenant_id: uuid.UUID) -> Board:
    """Read the tenant's board: live jobs (ordered by brand, product, name) and products.

    Args:
        session: Any session (reads only).
        tenant_id: Whose board; nothing of another tenant is read.

    Returns:
        The board; empty lists when the tenant has no job or product.
    """
    rows = (
        await session.execute(
            sa.select(ScheduledJob, Brand.name, Product.name)
            .join(Product, Product.id == ScheduledJob.product_id)
            .join(Brand, Brand.id == Product.brand_id)
            .where(ScheduledJob.tenant_id == tenant_id, ScheduledJob.deleted_at.is_(None))
            .order_by(Brand.name, Product.name, ScheduledJob.name)
        )
    ).all()
    job_ids = [job.id for job, _b, _p in rows]
    last_runs = await _last_runs(session, job_ids)
    latest_ads, totals, ads_run_at = await _latest_ads(session, job_ids)
    jobs = [
        BoardJob(
            id=job.id,
            name=job.name,
            brand=brand,
            product=product,
            product_id=job.product_id,
            status=job.status or "active",
            pause_note=job.pause_note,
            schedule_type=job.schedule_type,
            cron_expression=job.cron_expression,
            scheduled_at=job.scheduled_at,
            timezone=job.timezone or "UTC",
            runs_completed=job.runs_completed or 0,
            max_runs=job.max_runs,
            next_run_at=job.next_run_at,
            template_mode=job.template_mode,
            deployment_name=job.deployment_name,
            prefect_deployment_id=job.prefect_deployment_id,
            last_run=last_runs.get(job.id),
            latest_ads=latest_ads.get(job.id, []),
            latest_ads_total=totals.get(job.id, 0),
            latest_ads_run_at=ads_run_at.get(job.id),
        )
        for job, brand, product in rows
    ]
    return Board(tenant_id=tenant_id, jobs=jobs, products=await _products(session, tenant_id))


def _newest_first() -> sa.ColumnElement[int]:
    """Row number of a run within its job, newest first (a run not yet started by creation)."""
    return (
        sa.func.row_number()
        .over(
            partition_by=ScheduledJobRun.scheduled_job_id,
            order_by=(
                sa.func.coalesce(ScheduledJobRun.started_at, ScheduledJobRun.created_at).desc(),
                ScheduledJobRun.id,
            ),
        )
        .label("rank")
    )


async def _last_runs(session: AsyncSession, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, BoardRun]:
    if not job_ids:
        return {}
    ranked = (
        sa.select(ScheduledJobRun, _newest_first())
        .where(ScheduledJobRun.scheduled_job_id.in_(job_ids))
        .subquery()
    )
    run = aliased(ScheduledJobRun, ranked)
    found = (await session.scalars(sa.select(run).where(ranked.c.rank == 1))).all()
    return {
        r.scheduled_job_id: BoardRun(
            flow_run_id=r.flow_run_id,
            flow_run_name=r.flow_run_name,
            status=r.status,
            prefect_state=r.prefect_state,
            trigger=r.trigger,
            started_at=r.started_at,
            completed_at=r.completed_at,
            error_message=r.error_message,
            skip_reason=r.skip_reason,
            logs=r.logs,
        )
        for r in found
    }


async def _latest_ads(
    session: AsyncSession, job_ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, list[BoardAd]], dict[uuid.UUID, int], dict[uuid.UUID, datetime]]:
    """Per job, the ads of its latest completed run (a skipped or failed run made none)."""
    if not job_ids:
        return {}, {}, {}
    ranked = (
        sa.select(
            ScheduledJobRun.id,
            ScheduledJobRun.scheduled_job_id,
            sa.func.coalesce(ScheduledJobRun.started_at, ScheduledJobRun.created_at).label("at"),
            _newest_first(),
        )
        .where(
            ScheduledJobRun.scheduled_job_id.in_(job_ids),
            ScheduledJobRun.status == "completed",
            ScheduledJobRun.skip_reason.is_(None),
        )
        .subquery()
    )
    rows = (
        await session.execute(
            sa.select(
                ranked.c.scheduled_job_id,
                ranked.c.at,
                AdRun.template_storage_name,
                GeneratedAd.id,
                GeneratedAd.storage_path,
                GeneratedAd.headline,
            )
            .join(AdRun, AdRun.scheduled_job_run_id == ranked.c.id)
            .join(GeneratedAd, GeneratedAd.ad_run_id == AdRun.id)
            .where(ranked.c.rank == 1, AdRun.status == "completed")
            .order_by(
                ranked.c.scheduled_job_id,
                AdRun.template_storage_name,
                GeneratedAd.variation_index,
            )
        )
    ).all()
    ads: dict[uuid.UUID, list[BoardAd]] = {}
    totals: dict[uuid.UUID, int] = {}
    run_at: dict[uuid.UUID, datetime] = {}
    shown_rows: dict[uuid.UUID, tuple[uuid.UUID, str, str, str]] = {}
    for job_id, at, template, ad_id, path, headline in rows:
        totals[job_id] = totals.get(job_id, 0) + 1
        run_at[job_id] = at
        if totals[job_id] <= ADS_PER_JOB:
            shown_rows[ad_id] = (job_id, path, headline or "", template)
    # The pictures of the shown ads only (a job's latest run may hold dozens of ads).
    pictures = await board_thumbnails(session, list(shown_rows))
    for ad_id, (job_id, path, headline, template) in shown_rows.items():
        ads.setdefault(job_id, []).append(
            BoardAd(
                storage_path=path,
                headline=headline,
                template=template,
                ad_id=ad_id,
                thumbnail=pictures.get(ad_id),
            )
        )
    return ads, totals, run_at


async def board_thumbnails(
    session: AsyncSession, ad_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The stored board pictures of these ads (`generated_ads.id` → data URI); ads without one
    are left out."""
    if not ad_ids:
        return {}
    rows = await session.execute(
        sa.select(GeneratedAd.id, GeneratedAd.board_thumbnail).where(
            GeneratedAd.id.in_(ad_ids), GeneratedAd.board_thumbnail.is_not(None)
        )
    )
    return {ad_id: uri for ad_id, uri in rows.all() if uri is not None}


async def save_board_thumbnails(session: AsyncSession, pictures: dict[uuid.UUID, str]) -> None:
    """Store board pictures (`generated_ads.id` → data URI); one made before is kept."""
    if not pictures:
        return
    table = cast(sa.Table, GeneratedAd.__table__)
    await session.execute(
        sa.update(table)
        .where(table.c.id == sa.bindparam("ad"), table.c.board_thumbnail.is_(None))
        .values(board_thumbnail=sa.bindparam("uri")),
        [{"ad": ad_id, "uri": uri} for ad_id, uri in pictures.items()],
    )


async def ads_without_board_thumbnail(
    session: AsyncSession, flow_run_id: uuid.UUID
) -> dict[uuid.UUID, str]:
    """The ads a flow run made that have no board picture yet (`generated_ads.id` → path)."""
    rows = await session.execute(
        sa.select(GeneratedAd.id, GeneratedAd.storage_path)
        .join(AdRun, AdRun.id == GeneratedAd.ad_run_id)
        .where(AdRun.flow_run_id == flow_run_id, GeneratedAd.board_thumbnail.is_(None))
    )
    return {ad_id: path for ad_id, path in rows.all()}


async def _products(session: AsyncSession, tenant_id: uuid.UUID) -> list[ProductTemplates]:
    usage = ProductTemplateUsage
    # A claim of a never-used template (use_count 0, a run in flight) is not a use yet.
    used = (
        sa.select(sa.func.count())
        .where(usage.product_id == Product.id, usage.use_count > 0)
        .correlate(Product)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            sa.select(Product.id, Brand.name, Product.name, Product.brand_id, used)
            .join(Brand, Brand.id == Product.brand_id)
            .where(Product.tenant_id == tenant_id)
            .order_by(Brand.name, Product.name)
        )
    ).all()
    # "Unused" is exactly what `unused` mode can still pick: the claims' own query, counted (one
    # statement per product; a tenant has few products).
    result: list[ProductTemplates] = []
    for pid, brand, product, brand_id, used_count in rows:
        pickable = unused_templates_query(tenant_id, pid, brand_id, limit=None).subquery()
        unused = await session.scalar(sa.select(sa.func.count()).select_from(pickable))
        result.append(
            ProductTemplates(
                product_id=pid,
                brand=brand,
                product=product,
                used=int(used_count or 0),
                unused=int(unused or 0),
            )
        )
    return result
