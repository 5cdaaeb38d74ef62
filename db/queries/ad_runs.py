"""Ad runs a flow run left unfinished, and the bookkeeping a run could not finish itself.

A flow run creates its ad runs `pending` up front and settles each one (`completed` with its
ads and usage, or `failed` with its reason) as it goes, then writes the summary of its run row
(`ad_run_ids`, `templates_used`). When the run ends early (an exception, a crash, a kill), these
make that state final for it, whoever notices first (the run itself, a state hook, or the
reconciler):

- `settle_unfinished_ad_runs`: every ad run still `pending`/`running` becomes `failed` with the
  reason the run ended, and every template claim the run still holds is released;
- `unfinished_job_runs` / `summarise_job_run`: a terminal run row whose summary was never written
  gets it from its ad runs (the marker: `ad_run_ids` is NULL while ad runs point at the row).

All of it is idempotent: a second call finds nothing left to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AdRun, ExportDelivery, ScheduledJobRun
from db.queries.deliveries import unconfirmed_note
from db.queries.templates import release_claims
from db.types import utcnow
from domain.vocab import TERMINAL_RUN_STATUSES, UNFINISHED_AD_RUN_STATUSES


@dataclass(frozen=True)
class SettledWork:
    """What `settle_unfinished_ad_runs` changed.

    Attributes:
        failed_ad_runs: (ad run id, tenant id) of the ad runs it marked failed.
        released: Template storage names whose claims it released.
    """

    failed_ad_runs: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.failed_ad_runs or self.released)


async def settle_unfinished_ad_runs(
    session: AsyncSession, *, flow_run_id: uuid.UUID, reason: str
) -> SettledWork:
    """Fail the flow run's unfinished ad runs with `reason`; release every claim it holds.

    Only for a run that is over (or is ending now): an ad run of a live run is not touched
    by anyone else. A failed ad run never has ads or usage (those are written with `completed`
    in one transaction), so its template stays unused.
    """
    now = utcnow()
    failed = (
        await session.execute(
            sa.update(AdRun)
            .where(
                AdRun.flow_run_id == flow_run_id,
                AdRun.status.in_(UNFINISHED_AD_RUN_STATUSES),
            )
            .values(
                status="failed",
                error_message=reason[:2000],
                completed_at=now,
                updated_at=now,
            )
            .returning(AdRun.id, AdRun.tenant_id)
        )
    ).all()
    released = await release_claims(session, flow_run_id=flow_run_id)
    return SettledWork(failed_ad_runs=[(r[0], r[1]) for r in failed], released=released)


async def flow_runs_with_unfinished_ad_runs(session: AsyncSession) -> list[uuid.UUID]:
    """Flow runs that have at least one ad run still pending or running."""
    rows = await session.scalars(
        sa.select(AdRun.flow_run_id)
        .where(AdRun.status.in_(UNFINISHED_AD_RUN_STATUSES), AdRun.flow_run_id.is_not(None))
        .distinct()
    )
    return [r for r in rows.all() if r is not None]


async def unfinished_job_runs(
    session: AsyncSession, *, job_ids: Sequence[uuid.UUID] | None = None
) -> list[ScheduledJobRun]:
    """Terminal run rows whose summary the run never wrote, though ad runs point at them."""
    has_ad_runs = sa.exists().where(AdRun.scheduled_job_run_id == ScheduledJobRun.id)
    query = sa.select(ScheduledJobRun).where(
        ScheduledJobRun.status.in_(TERMINAL_RUN_STATUSES),
        ScheduledJobRun.ad_run_ids.is_(None),
        has_ad_runs,
    )
    if job_ids is not None:
        query = query.where(ScheduledJobRun.scheduled_job_id.in_(list(job_ids)))
    return list((await session.scalars(query)).all())


async def summarise_job_run(session: AsyncSession, job_run_id: uuid.UUID) -> ScheduledJobRun:
    """Write the run row's `ad_run_ids` and `templates_used` from its ad runs; returns the row.

    A run that wrote no summary of its own also gets a line in `logs` saying who wrote it.
    """
    row = await session.get(ScheduledJobRun, job_run_id, with_for_update=True)
    if row is None:
        raise LookupError(f"job run {job_run_id} not found")
    ad_runs = list(
        (
            await session.scalars(
                sa.select(AdRun)
                .where(AdRun.scheduled_job_run_id == job_run_id)
                .order_by(AdRun.created_at, AdRun.template_storage_name)
            )
        ).all()
    )
    done = [a for a in ad_runs if a.status == "completed"]
    row.ad_run_ids = [a.id for a in ad_runs]
    row.templates_used = [a.template_storage_name for a in done]
    note = (
        f"ended before writing its summary: {len(done)} of {len(ad_runs)} ad runs completed; "
        "recorded by the reconciler"
    )
    row.logs = f"{row.logs}\n{note}" if row.logs else note
    await session.flush()
    return row


async def completed_ad_runs_of(session: AsyncSession, job_run_id: uuid.UUID) -> list[AdRun]:
    """The run's completed ad runs, oldest first."""
    return list(
        (
            await session.scalars(
                sa.select(AdRun)
                .where(AdRun.scheduled_job_run_id == job_run_id, AdRun.status == "completed")
                .order_by(AdRun.created_at)
            )
        ).all()
    )


async def delivered_channels(
    session: AsyncSession, ad_run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, set[str]]:
    """For each ad run, the channels that already have a delivery row (whatever its status)."""
    found: dict[uuid.UUID, set[str]] = {a: set() for a in ad_run_ids}
    if not ad_run_ids:
        return found
    rows = await session.execute(
        sa.select(ExportDelivery.ad_run_id, ExportDelivery.channel).where(
            ExportDelivery.ad_run_id.in_(list(ad_run_ids))
        )
    )
    for ad_run_id, channel in rows.all():
        if ad_run_id is not None:
            found.setdefault(ad_run_id, set()).add(channel)
    return found


async def has_digest_delivery(session: AsyncSession, job_run_id: uuid.UUID) -> bool:
    """Whether the run's digest email has a delivery row."""
    found = await session.scalar(
        sa.select(ExportDelivery.id).where(
            ExportDelivery.scheduled_job_run_id == job_run_id, ExportDelivery.channel == "email"
        )
    )
    return found is not None


async def abandon_pending_deliveries(
    session: AsyncSession, *, ad_run_ids: Sequence[uuid.UUID], job_run_id: uuid.UUID | None
) -> int:
    """Close the deliveries a dead run left `pending` mid-send; returns how many.

    Whether the provider received such a send is unknown. Email carries an idempotency key, so
    a later export (the retry-exports flow) can safely send it again: it becomes
    `failed`/`retryable`. Slack has no idempotency: it becomes `unconfirmed` ("sent, not recorded
    — check"), the same state the export path gives a send it could not record, and is only sent
    again when a person forces it.
    """
    subject: sa.ColumnElement[bool] = ExportDelivery.ad_run_id.in_(list(ad_run_ids))
    if job_run_id is not None:
        subject = sa.or_(subject, ExportDelivery.scheduled_job_run_id == job_run_id)
    pending = list(
        (
            await session.scalars(
                sa.select(ExportDelivery)
                .where(subject, ExportDelivery.status == "pending")
                .with_for_update()
            )
        ).all()
    )
    for delivery in pending:
        if delivery.channel == "slack":
            delivery.status = "unconfirmed"
            delivery.error_message = unconfirmed_note(delivery.channel, delivery.updated_at)
        else:
            delivery.status = "failed"
            delivery.error_kind = "retryable"
            delivery.error_message = (
                "the run ended while sending this email; the retry-exports flow sends it again "
                "under the same idempotency key, so it cannot arrive twice"
            )
        delivery.updated_at = utcnow()
    await session.flush()
    return len(pending)
