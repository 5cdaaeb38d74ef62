"""The template catalog: adding templates with the project's own errors on bad input."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import ConflictError, NotFoundError
from db.models import AdTemplate, Brand


async def add_template(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    storage_name: str,
    width: int,
    height: int,
    name: str = "",
    brand_id: uuid.UUID | None = None,
    tags: list[str] | None = None,
    source: str = "library",
) -> AdTemplate:
    """Catalog one template.

    Raises:
        ConflictError: The tenant already has a template with this storage name.
        NotFoundError: `brand_id` is not one of the tenant's brands.
        ValueError: A size that is not positive.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"template size must be positive, got {width}x{height}")
    if brand_id is not None:
        owner = await session.scalar(
            sa.select(Brand.id).where(Brand.id == brand_id, Brand.tenant_id == tenant_id)
        )
        if owner is None:
            raise NotFoundError("brand", brand_id)
    template = AdTemplate(
        tenant_id=tenant_id,
        storage_name=storage_name,
        name=name,
        brand_id=brand_id,
        width=width,
        height=height,
        tags=tags or [],
        source=source,
    )
    try:
        async with session.begin_nested():
            session.add(template)
            await session.flush()
    except sa.exc.IntegrityError as exc:
        raise ConflictError("template", "storage_name", storage_name) from exc
    return template


async def list_templates(
    session: AsyncSession, *, tenant_id: uuid.UUID, inactive_only: bool = False
) -> list[AdTemplate]:
    """The tenant's catalog in storage-name order (only the inactive ones, when asked)."""
    query = sa.select(AdTemplate).where(AdTemplate.tenant_id == tenant_id)
    if inactive_only:
        query = query.where(AdTemplate.active.is_(False))
    return list((await session.scalars(query.order_by(AdTemplate.storage_name))).all())
