"""Retention: which old rows may go, and deleting them in bounded batches.

What goes, once older than the cutoff (by when it ended):

- **ad runs** that are finished (`completed`/`failed`), with their generated ads (rows here,
  files in `flows/retention.py`) and their export deliveries;
- **run-history rows** (`scheduled_job_runs`) that are terminal and no longer back anything,
  with their digest deliveries.

What stays, whatever its age (what a job still needs):

- `product_template_usage` is never touched, nor is an ad run it points at (the `unused` mode's
  memory of which template was used when, and by which ad run);
- `scheduled_jobs` and their counters: `derive_job_state` recomputes them from the history, so
  every row it reads stays — the completed *scheduled* runs (`runs_completed` counts them),
  the failed scheduled runs after a job's newest completed one (the failure streak), the run
  with a job's latest start (`last_run_at`), and each job's newest run, which keeps its ad runs;
- anything awaiting something: a run or ad run not yet terminal, a delivery `pending` (being
  sent) or `unconfirmed` (a person must check it), and whatever those belong to.

Each batch is one transaction that looks at the next `batch_size` old rows in primary-key order
and locks those that may go (SKIP LOCKED on PostgreSQL), so memory, lock time and the cost of a
batch are bounded whatever is kept, and a failure loses at most the batch in hand: it rolls back
and the next pass takes the same rows again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import AdRun, ExportDelivery, GeneratedAd, ProductTemplateUsage, ScheduledJobRun
from domain.vocab import TERMINAL_RUN_STATUSES

#: Ad-run statuses that are finished (nothing more will happen to the run by itself).
FINISHED_AD_RUN_STATUSES = ("completed", "failed")
#: Delivery statuses that still await something: a sender, or a person's check.
AWAITING_DELIVERY_STATUSES = ("pending", "unconfirmed")


def _run_ended_at() -> sa.ColumnElement[datetime]:
    runs = ScheduledJobRun
    return sa.func.coalesce(runs.completed_at, runs.started_at, runs.scheduled_for, runs.created_at)


def _newer_run_exists(run: type[ScheduledJobRun]) -> sa.ColumnElement[bool]:
    """A later-created run of the same job exists (so `run` is not its job's newest)."""
    newer = aliased(ScheduledJobRun)
    return sa.exists().where(
        newer.scheduled_job_id == run.scheduled_job_id, newer.created_at > run.created_at
    )


def prunable_job_runs(cutoff: datetime) -> sa.Select[uuid.UUID]:
    """Ids of run-history rows that may be deleted (rules in the module docstring)."""
    run = ScheduledJobRun
    later = aliased(ScheduledJobRun)
    completed_later = aliased(ScheduledJobRun)
    order_key = sa.func.coalesce(run.scheduled_for, run.started_at, run.created_at)
    completed_key = sa.func.coalesce(
        completed_later.scheduled_for, completed_later.started_at, completed_later.created_at
    )
    return sa.select(run.id).where(
        run.status.in_(TERMINAL_RUN_STATUSES),
        _run_ended_at() < cutoff,
        # `runs_completed` counts these.
        sa.not_(sa.and_(run.trigger == "schedule", run.status == "completed")),
        _newer_run_exists(run),
        # `last_run_at` is the latest start.
        sa.or_(
            run.started_at.is_(None),
            sa.exists().where(
                later.scheduled_job_id == run.scheduled_job_id, later.started_at > run.started_at
            ),
        ),
        # A failed scheduled run after the newest completed one is part of the failure streak.
        sa.or_(
            sa.not_(sa.and_(run.trigger == "schedule", run.status == "failed")),
            sa.exists().where(
                completed_later.scheduled_job_id == run.scheduled_job_id,
                completed_later.trigger == "schedule",
                completed_later.status == "completed",
                completed_key > order_key,
            ),
        ),
        ~sa.exists().where(AdRun.scheduled_job_run_id == run.id),
        ~sa.exists().where(
            ExportDelivery.scheduled_job_run_id == run.id,
            ExportDelivery.status.in_(AWAITING_DELIVERY_STATUSES),
        ),
    )


def prunable_ad_runs(cutoff: datetime) -> sa.Select[uuid.UUID]:
    """Ids of ad runs that may be deleted with their ads and deliveries."""
    ad_run = AdRun
    job_run = ScheduledJobRun
    job_run_done = sa.exists().where(
        job_run.id == ad_run.scheduled_job_run_id,
        job_run.status.in_(TERMINAL_RUN_STATUSES),
        _newer_run_exists(job_run),
    )
    return sa.select(ad_run.id).where(
        ad_run.status.in_(FINISHED_AD_RUN_STATUSES),
        sa.func.coalesce(ad_run.completed_at, ad_run.created_at) < cutoff,
        # NOT IN over the (small) usage table is one hashed lookup per row; a correlated NOT
        # EXISTS re-scanned it per row (no index on usage.ad_run_id).
        ad_run.id.not_in(
            sa.select(ProductTemplateUsage.ad_run_id).where(
                ProductTemplateUsage.ad_run_id.is_not(None)
            )
        ),
        ~sa.exists().where(
            ExportDelivery.ad_run_id == ad_run.id,
            ExportDelivery.status.in_(AWAITING_DELIVERY_STATUSES),
        ),
        sa.or_(ad_run.scheduled_job_run_id.is_(None), job_run_done),
    )


async def _take(
    session: AsyncSession,
    prunable: sa.Select[uuid.UUID],
    table: type[AdRun] | type[ScheduledJobRun],
    *,
    cutoff: datetime,
    batch_size: int,
    after: uuid.UUID | None,
) -> tuple[list[uuid.UUID], uuid.UUID | None]:
    """The prunable rows among the next `batch_size` candidates after `after`, by id.

    Candidates are old rows in primary-key order (an index scan that stops after the batch),
    so each batch costs the same however much is kept: the full rules are checked for the
    candidates only. Returns (prunable ids, the last candidate id, None when none are left).
    """
    candidates = sa.select(table.id).where(table.created_at < cutoff)
    if after is not None:
        candidates = candidates.where(table.id > after)
    scanned = list((await session.scalars(candidates.order_by(table.id).limit(batch_size))).all())
    if not scanned:
        return [], None
    query = prunable.where(table.id.in_(scanned))
    if session.get_bind().dialect.name == "postgresql":
        # Two passes at once (or a pass beside a run touching the same rows) never wait on
        # each other; a row one holds is the other's next time.
        query = query.with_for_update(skip_locked=True, of=table)
    return list((await session.scalars(query)).all()), scanned[-1]


@dataclass(frozen=True)
class AdRunBatch:
    """A batch of ad runs about to go: ids, their ads' storage paths, where the scan is."""

    ad_run_ids: list[uuid.UUID]
    file_paths: list[str]
    scanned_up_to: uuid.UUID | None


async def take_ad_runs(
    session: AsyncSession, cutoff: datetime, batch_size: int, after: uuid.UUID | None = None
) -> AdRunBatch:
    """Lock the prunable ad runs among the next `batch_size` old ones, and list their files.

    `scanned_up_to` is None once every old ad run has been looked at.
    """
    ids, last = await _take(
        session,
        prunable_ad_runs(cutoff),
        AdRun,
        cutoff=cutoff,
        batch_size=batch_size,
        after=after,
    )
    paths: list[str] = []
    if ids:
        paths = list(
            (
                await session.scalars(
                    sa.select(GeneratedAd.storage_path).where(GeneratedAd.ad_run_id.in_(ids))
                )
            ).all()
        )
    return AdRunBatch(ids, paths, last)


@dataclass(frozen=True)
class DeletedAdRuns:
    """Rows one ad-run batch deleted."""

    ad_runs: int
    generated_ads: int
    deliveries: int


async def delete_ad_runs(session: AsyncSession, ids: list[uuid.UUID]) -> DeletedAdRuns:
    """Delete ad runs with their generated-ad rows and deliveries (children first)."""
    if not ids:
        return DeletedAdRuns(0, 0, 0)
    deliveries = await session.execute(
        sa.delete(ExportDelivery).where(ExportDelivery.ad_run_id.in_(ids))
    )
    ads = await session.execute(sa.delete(GeneratedAd).where(GeneratedAd.ad_run_id.in_(ids)))
    runs = await session.execute(sa.delete(AdRun).where(AdRun.id.in_(ids)))
    return DeletedAdRuns(
        ad_runs=_count(runs), generated_ads=_count(ads), deliveries=_count(deliveries)
    )


async def take_job_runs(
    session: AsyncSession, cutoff: datetime, batch_size: int, after: uuid.UUID | None = None
) -> tuple[list[uuid.UUID], uuid.UUID | None]:
    """Lock the prunable run-history rows among the next `batch_size` old ones.

    Returns (ids, the last row looked at — None once every old row has been).
    """
    return await _take(
        session,
        prunable_job_runs(cutoff),
        ScheduledJobRun,
        cutoff=cutoff,
        batch_size=batch_size,
        after=after,
    )


async def delete_job_runs(session: AsyncSession, ids: list[uuid.UUID]) -> tuple[int, int]:
    """Delete run-history rows and their digest deliveries; returns (runs, deliveries)."""
    if not ids:
        return 0, 0
    deliveries = await session.execute(
        sa.delete(ExportDelivery).where(ExportDelivery.scheduled_job_run_id.in_(ids))
    )
    runs = await session.execute(sa.delete(ScheduledJobRun).where(ScheduledJobRun.id.in_(ids)))
    return _count(runs), _count(deliveries)


async def flow_runs_with_ads(
    session: AsyncSession, flow_run_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these flow runs still have ad runs (their artifacts still describe ads)."""
    if not flow_run_ids:
        return set()
    rows = await session.scalars(
        sa.select(AdRun.flow_run_id).where(AdRun.flow_run_id.in_(flow_run_ids)).distinct()
    )
    return {row for row in rows.all() if row is not None}


def _count(result: sa.Result[object]) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
