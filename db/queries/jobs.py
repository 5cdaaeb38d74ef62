"""Queries behind the SDK's job calls: every one scoped to a tenant.

A job reference is its id or its name (`job_ref`); "live" means not soft-deleted. Functions that
return rows for writing take `for_update` (a row lock on PostgreSQL, a no-op on SQLite).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import NotFoundError
from db.models import AdTemplate, Brand, Product, ScheduledJob, ScheduledJobRun
from db.types import utcnow


def as_uuid(value: object) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (then it is a name)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def load_live_job(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    job_ref: uuid.UUID | str,
    *,
    for_update: bool = False,
) -> ScheduledJob:
    """The tenant's live job by id or name.

    Raises:
        NotFoundError: No live job of the tenant has that id or name.
    """
    stmt = sa.select(ScheduledJob).where(
        ScheduledJob.tenant_id == tenant_id, ScheduledJob.deleted_at.is_(None)
    )
    ref = as_uuid(job_ref)
    stmt = stmt.where(ScheduledJob.id == ref if ref else ScheduledJob.name == str(job_ref))
    if for_update:
        stmt = stmt.with_for_update()
    job = (await session.scalars(stmt.limit(2))).first()
    if job is None:
        raise NotFoundError("scheduled job", job_ref)
    return job


async def find_live_job_by_name(
    session: AsyncSession, tenant_id: uuid.UUID, name: str, *, for_update: bool = False
) -> ScheduledJob | None:
    """The tenant's live job of that name, or None."""
    stmt = sa.select(ScheduledJob).where(
        ScheduledJob.tenant_id == tenant_id,
        ScheduledJob.name == name,
        ScheduledJob.deleted_at.is_(None),
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def load_job_with_history(
    session: AsyncSession, tenant_id: uuid.UUID, job_ref: uuid.UUID | str
) -> ScheduledJob:
    """A job by id or name, deleted ones included: the live job of that name first, else the
    most recently deleted one (for showing run history).

    Raises:
        NotFoundError: The tenant never had such a job.
    """
    ref = as_uuid(job_ref)
    stmt = sa.select(ScheduledJob).where(ScheduledJob.tenant_id == tenant_id)
    stmt = stmt.where(ScheduledJob.id == ref if ref else ScheduledJob.name == str(job_ref))
    stmt = stmt.order_by(ScheduledJob.deleted_at.is_(None).desc(), ScheduledJob.deleted_at.desc())
    job = (await session.scalars(stmt)).first()
    if job is None:
        raise NotFoundError("scheduled job", job_ref)
    return job


async def list_live_jobs(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    brand_id: uuid.UUID | None = None,
    product_id: uuid.UUID | None = None,
    status: str | None = None,
) -> list[ScheduledJob]:
    """The tenant's live jobs, optionally filtered, by name."""
    stmt = sa.select(ScheduledJob).where(
        ScheduledJob.tenant_id == tenant_id, ScheduledJob.deleted_at.is_(None)
    )
    if brand_id is not None:
        stmt = stmt.where(ScheduledJob.brand_id == brand_id)
    if product_id is not None:
        stmt = stmt.where(ScheduledJob.product_id == product_id)
    if status is not None:
        stmt = stmt.where(ScheduledJob.status == status)
    return list((await session.scalars(stmt.order_by(ScheduledJob.name))).all())


async def job_runs(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID, limit: int
) -> list[ScheduledJobRun]:
    """A job's runs, newest (by scheduled time, else creation) first, at most `limit`."""
    rows = await session.scalars(
        sa.select(ScheduledJobRun)
        .where(
            ScheduledJobRun.scheduled_job_id == job_id,
            ScheduledJobRun.tenant_id == tenant_id,
        )
        .order_by(
            sa.func.coalesce(ScheduledJobRun.scheduled_for, ScheduledJobRun.created_at).desc()
        )
        .limit(limit)
    )
    return list(rows.all())


async def mark_job_deleted(
    session: AsyncSession, tenant_id: uuid.UUID, job_ref: uuid.UUID | str
) -> ScheduledJob:
    """Soft-delete the tenant's live job (row and history stay); returns it.

    Raises:
        NotFoundError: No live job of that id or name.
    """
    job = await load_live_job(session, tenant_id, job_ref, for_update=True)
    job.deleted_at = utcnow()
    return job


async def undelete_job(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Undo `mark_job_deleted` (its deployment could not be removed)."""
    await session.execute(
        sa.update(ScheduledJob).where(ScheduledJob.id == job_id).values(deleted_at=None)
    )


# --- what a spec refers to ---------------------------------------------------------------------


async def product_with_brand(
    session: AsyncSession, tenant_id: uuid.UUID | None, product_id: uuid.UUID
) -> tuple[Product, Brand] | None:
    """The tenant's product and its brand, or None."""
    row = (
        await session.execute(
            sa.select(Product, Brand)
            .join(Brand, Brand.id == Product.brand_id)
            .where(Product.id == product_id, Product.tenant_id == tenant_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def product_and_brand_names(session: AsyncSession, product_id: uuid.UUID) -> tuple[str, str]:
    """(product name, brand name) of a product (for deployment descriptions)."""
    row = (
        await session.execute(
            sa.select(Product.name, Brand.name)
            .join(Brand, Brand.id == Product.brand_id)
            .where(Product.id == product_id)
        )
    ).one()
    return str(row[0]), str(row[1])


async def product_names(
    session: AsyncSession, tenant_id: uuid.UUID, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Names of the tenant's products, by id (ids of other tenants are left out)."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = await session.execute(
        sa.select(Product.id, Product.name).where(
            Product.tenant_id == tenant_id, Product.id.in_(wanted)
        )
    )
    return {pid: name for pid, name in rows.all()}


async def count_library_templates(
    session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID
) -> int:
    """Active library templates a product of this brand can use (shared or the brand's own)."""
    count = await session.scalar(
        sa.select(sa.func.count())
        .select_from(AdTemplate)
        .where(
            AdTemplate.tenant_id == tenant_id,
            AdTemplate.active.is_(True),
            AdTemplate.source == "library",
            sa.or_(AdTemplate.brand_id.is_(None), AdTemplate.brand_id == brand_id),
        )
    )
    return int(count or 0)


async def resolve_template_refs(
    session: AsyncSession, tenant_id: uuid.UUID, refs: Sequence[str], brand_id: uuid.UUID
) -> tuple[list[str], list[str]]:
    """Template ids or storage names → (storage names in the given order, unknown refs).

    Only active templates of the tenant count, shared or of `brand_id`.
    """
    ids = [u for u in (as_uuid(r) for r in refs) if u is not None]
    rows = (
        await session.execute(
            sa.select(AdTemplate.id, AdTemplate.storage_name, AdTemplate.brand_id).where(
                AdTemplate.tenant_id == tenant_id,
                AdTemplate.active.is_(True),
                sa.or_(AdTemplate.id.in_(ids), AdTemplate.storage_name.in_(list(refs))),
            )
        )
    ).all()
    by_ref: dict[str, str] = {}
    for tid, name, tpl_brand in rows:
        if tpl_brand is not None and tpl_brand != brand_id:
            continue
        by_ref[str(tid)] = name
        by_ref[name] = name
    keys = [str(as_uuid(r) or r) for r in refs]
    missing = [r for r, key in zip(refs, keys, strict=True) if key not in by_ref]
    found = list(dict.fromkeys(by_ref[key] for key in keys if key in by_ref))
    return found, missing


async def existing_storage_names(
    session: AsyncSession, tenant_id: uuid.UUID, names: Sequence[str]
) -> set[str]:
    """Which of these storage names the tenant's catalog already holds."""
    rows = await session.scalars(
        sa.select(AdTemplate.storage_name).where(
            AdTemplate.tenant_id == tenant_id, AdTemplate.storage_name.in_(list(names))
        )
    )
    return set(rows.all())
