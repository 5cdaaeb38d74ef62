"""The approval store (`run_approvals`): what a run waits for, and the one decision about it.

A row is opened when a run suspends for approval (idempotent per flow run) and settled exactly
once: `settle_approval` is a conditional update (`WHERE status = 'awaiting'`), so the first of
the Prefect UI's resume, the SDK/CLI and the timeout wins and every later attempt changes
nothing. Settling also marks each ad `approved` or `rejected` (`generated_ads.review_status`);
rejected ads stay in storage. `mark_exported` hands the approved ads to the export step once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AdRun, GeneratedAd, RunApproval, ScheduledJob, ScheduledJobRun
from db.types import utcnow
from domain.approval import Decision

AWAITING = "awaiting"
AWAITING_RUN_STATUS = "awaiting_approval"


@dataclass(frozen=True)
class AdForReview:
    """One ad awaiting (or past) a decision, with what a reviewer sees."""

    id: uuid.UUID
    ad_run_id: uuid.UUID
    template: str
    variation_index: int
    headline: str
    storage_path: str
    content_type: str
    review_status: str | None


async def open_approval(
    session: AsyncSession,
    *,
    job_run: ScheduledJobRun,
    flow_run_id: uuid.UUID,
    ad_ids: list[uuid.UUID],
    deadline_at: datetime,
    on_timeout: str,
) -> RunApproval:
    """Open the run's approval (or return the one already open) and mark the run awaiting.

    Idempotent per flow run: a run re-entering its gate gets its first row back unchanged.
    """
    existing = await session.scalar(
        sa.select(RunApproval).where(RunApproval.flow_run_id == flow_run_id)
    )
    if existing is None:
        existing = RunApproval(
            id=uuid.uuid4(),
            tenant_id=job_run.tenant_id,
            scheduled_job_id=job_run.scheduled_job_id,
            scheduled_job_run_id=job_run.id,
            flow_run_id=flow_run_id,
            status=AWAITING,
            ad_ids=list(ad_ids),
            requested_at=utcnow(),
            deadline_at=deadline_at,
            on_timeout=on_timeout,
        )
        session.add(existing)
        await session.flush()
    if existing.status == AWAITING:
        await session.execute(
            sa.update(ScheduledJobRun)
            .where(
                ScheduledJobRun.id == job_run.id,
                ScheduledJobRun.status.in_(("pending", "running")),
            )
            .values(status=AWAITING_RUN_STATUS, prefect_state="Suspended", updated_at=utcnow())
        )
    return existing


async def approval_for_flow_run(
    session: AsyncSession, flow_run_id: uuid.UUID, *, for_update: bool = False
) -> RunApproval | None:
    """The approval of a flow run, or None (the run has none)."""
    query = sa.select(RunApproval).where(RunApproval.flow_run_id == flow_run_id)
    if for_update:
        query = query.with_for_update()
    return await session.scalar(query)


async def find_approval(
    session: AsyncSession, tenant_id: uuid.UUID, run: uuid.UUID
) -> RunApproval | None:
    """A tenant's approval by flow run id, job run id or approval id; None when not found."""
    return await session.scalar(
        sa.select(RunApproval).where(
            RunApproval.tenant_id == tenant_id,
            sa.or_(
                RunApproval.flow_run_id == run,
                RunApproval.scheduled_job_run_id == run,
                RunApproval.id == run,
            ),
        )
    )


async def list_approvals(
    session: AsyncSession, tenant_id: uuid.UUID, *, status: str | None = AWAITING, limit: int = 100
) -> list[tuple[RunApproval, str]]:
    """A tenant's approvals (awaiting ones by default), oldest deadline first, with job names."""
    query = (
        sa.select(RunApproval, ScheduledJob.name)
        .join(ScheduledJob, ScheduledJob.id == RunApproval.scheduled_job_id)
        .where(RunApproval.tenant_id == tenant_id)
        .order_by(RunApproval.deadline_at, RunApproval.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(RunApproval.status == status)
    return [(row, str(name)) for row, name in (await session.execute(query)).all()]


async def approvals_of_job_runs(
    session: AsyncSession, tenant_id: uuid.UUID, job_run_ids: Iterable[uuid.UUID]
) -> list[RunApproval]:
    """The approvals of these job runs (`scheduled_job_runs.id`), this tenant's only, in one
    query; runs without an approval are left out (at most one row per run: the column is
    unique). Order: oldest request first."""
    ids = list(dict.fromkeys(job_run_ids))
    if not ids:
        return []
    rows = await session.scalars(
        sa.select(RunApproval)
        .where(RunApproval.tenant_id == tenant_id, RunApproval.scheduled_job_run_id.in_(ids))
        .order_by(RunApproval.requested_at, RunApproval.id)
    )
    return list(rows.all())


async def ads_for_review(session: AsyncSession, approval: RunApproval) -> list[AdForReview]:
    """The ads of an approval, in the order they were presented."""
    rows = (
        await session.execute(
            sa.select(GeneratedAd, AdRun.template_storage_name)
            .join(AdRun, AdRun.id == GeneratedAd.ad_run_id)
            .where(GeneratedAd.id.in_(list(approval.ad_ids)))
        )
    ).all()
    by_id = {
        ad.id: AdForReview(
            id=ad.id,
            ad_run_id=ad.ad_run_id,
            template=str(template),
            variation_index=ad.variation_index,
            headline=ad.headline,
            storage_path=ad.storage_path,
            content_type=ad.content_type,
            review_status=ad.review_status,
        )
        for ad, template in rows
    }
    return [by_id[i] for i in approval.ad_ids if i in by_id]


async def settle_approval(
    session: AsyncSession,
    approval_id: uuid.UUID,
    decision: Decision,
    *,
    via: str,
    timed_out: bool = False,
) -> bool:
    """Record the decision once; True when this call settled it, False when it already was.

    The conditional update takes the row's lock: a concurrent settler waits, then finds the
    row no longer awaiting and changes nothing.
    """
    status = "timed_out" if timed_out else decision.status
    settled = await session.scalar(
        sa.update(RunApproval)
        .where(RunApproval.id == approval_id, RunApproval.status == AWAITING)
        .values(
            status=status,
            approved_ad_ids=list(decision.approved),
            rejected_ad_ids=list(decision.rejected),
            note=decision.note or None,
            decided_by=decision.reviewer or None,
            decided_via=via,
            decided_at=utcnow(),
            updated_at=utcnow(),
        )
        .returning(RunApproval.id)
    )
    if settled is None:
        return False
    for review, ids in (("approved", decision.approved), ("rejected", decision.rejected)):
        if ids:
            await session.execute(
                sa.update(GeneratedAd)
                .where(GeneratedAd.id.in_(list(ids)))
                .values(review_status=review)
            )
    return True


async def mark_exported(session: AsyncSession, approval_id: uuid.UUID) -> bool:
    """Claim the export of an approval's approved ads; True only for the first caller."""
    claimed = await session.scalar(
        sa.update(RunApproval)
        .where(
            RunApproval.id == approval_id,
            RunApproval.status != AWAITING,
            RunApproval.exported_at.is_(None),
        )
        .values(exported_at=utcnow(), updated_at=utcnow())
        .returning(RunApproval.id)
    )
    return claimed is not None


async def expired_approvals(
    session: AsyncSession, now: datetime | None = None
) -> list[RunApproval]:
    """Awaiting approvals whose deadline has passed (every tenant), oldest first."""
    return list(
        (
            await session.scalars(
                sa.select(RunApproval)
                .where(RunApproval.status == AWAITING, RunApproval.deadline_at <= (now or utcnow()))
                .order_by(RunApproval.deadline_at)
            )
        ).all()
    )
