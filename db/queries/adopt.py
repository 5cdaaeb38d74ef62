"""Queries behind `jobs adopt` (`scheduler.adopt`): the rows of an adopted `scheduled_jobs`
table that have no deployment yet, their history, and the tenant's old template usage.

Rows leave as `LegacyJobView` read models, as stored (whatever the old page wrote); the one
write, a usage row's new name, is done here with a mapping the caller gives (`rename_usage`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AdTemplate, ProductTemplateUsage, ScheduledJob, ScheduledJobRun
from db.read_models import LegacyJobView


async def jobs_without_deployment(
    session: AsyncSession, tenant_id: uuid.UUID
) -> list[LegacyJobView]:
    """The tenant's live jobs that have no Prefect deployment, oldest first."""
    rows = await session.scalars(
        sa.select(ScheduledJob)
        .where(
            ScheduledJob.tenant_id == tenant_id,
            ScheduledJob.deleted_at.is_(None),
            ScheduledJob.prefect_deployment_id.is_(None),
        )
        .order_by(ScheduledJob.created_at, ScheduledJob.id)
    )
    return [LegacyJobView.of(row) for row in rows.all()]


async def live_name_counts(session: AsyncSession, tenant_id: uuid.UUID) -> dict[str, int]:
    """How many live jobs of the tenant carry each name."""
    rows = await session.execute(
        sa.select(ScheduledJob.name, sa.func.count())
        .where(ScheduledJob.tenant_id == tenant_id, ScheduledJob.deleted_at.is_(None))
        .group_by(ScheduledJob.name)
    )
    return {name: int(count) for name, count in rows.all()}


async def completed_scheduled_runs(session: AsyncSession, job_id: uuid.UUID) -> int:
    """The job's completed runs triggered by its schedule (what counts toward `max_runs`)."""
    count = await session.scalar(
        sa.select(sa.func.count()).where(
            ScheduledJobRun.scheduled_job_id == job_id,
            ScheduledJobRun.trigger == "schedule",
            ScheduledJobRun.status == "completed",
        )
    )
    return int(count or 0)


async def template_storage_names(session: AsyncSession, tenant_id: uuid.UUID) -> set[str]:
    """The storage names of the tenant's catalog templates."""
    rows = await session.scalars(
        sa.select(AdTemplate.storage_name).where(AdTemplate.tenant_id == tenant_id)
    )
    return set(rows.all())


@dataclass(frozen=True)
class UsageRenames:
    """What `rename_usage` did: rows renamed, and rows left as they were (no match)."""

    renamed: int
    unknown: int


async def rename_usage(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    catalog: set[str],
    match: Callable[[str], str | None],
) -> UsageRenames:
    """Rename the tenant's usage rows whose template is not in `catalog` to `match(name)`.

    A row is left as it is when `match` gives None or when its product already has a usage
    row under the matched name (the unique key `(product_id, template_storage_name)`).
    """
    usage = ProductTemplateUsage
    rows = (
        await session.execute(
            sa.select(usage.id, usage.product_id, usage.template_storage_name).where(
                usage.tenant_id == tenant_id, usage.template_storage_name.not_in(catalog)
            )
        )
    ).all()
    taken = {(r.product_id, r.template_storage_name) for r in rows}
    if rows:
        taken |= {
            (product_id, name)
            for product_id, name in (
                await session.execute(
                    sa.select(usage.product_id, usage.template_storage_name).where(
                        usage.product_id.in_({r.product_id for r in rows})
                    )
                )
            ).all()
        }
    renamed, unknown = 0, 0
    for row in rows:
        target = match(row.template_storage_name)
        if target is None or (row.product_id, target) in taken:
            unknown += 1
            continue
        taken.add((row.product_id, target))
        await session.execute(
            sa.update(usage).where(usage.id == row.id).values(template_storage_name=target)
        )
        renamed += 1
    return UsageRenames(renamed=renamed, unknown=unknown)


async def lock_and_name_deployment(
    session: AsyncSession, job_id: uuid.UUID, deployment_name: str
) -> None:
    """Store the job's deployment name, holding its row lock for the rest of the transaction."""
    stored = await session.get(ScheduledJob, job_id, with_for_update=True)
    if stored is None:
        raise LookupError(f"scheduled job {job_id} vanished while it was adopted")
    stored.deployment_name = deployment_name
