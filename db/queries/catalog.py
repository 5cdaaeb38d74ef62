"""The catalog's queries: brands, products and templates of one tenant.

Writes raise the project's own errors (`ConflictError`, `NotFoundError`), never a driver's.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import ConflictError, NotFoundError
from db.models import AdTemplate, Brand, Product, ScheduledJob
from db.queries.jobs import as_uuid

#: `inactive_reason` of a template a person deactivated (`templates deactivate`).
DEACTIVATED_REASON = "deactivated by a person"


Row = TypeVar("Row", AdTemplate, Brand)


async def _insert_unique(
    session: AsyncSession, row: Row, entity: str, field: str, value: object
) -> Row:
    """Insert `row` in a savepoint (the caller's transaction goes on after a clash).

    Raises:
        ConflictError: A uniqueness rule refused it (`entity` with `field`=`value` exists).
    """
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except sa.exc.IntegrityError as exc:
        raise ConflictError(entity, field, value) from exc
    return row


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
    return await _insert_unique(session, template, "template", "storage_name", storage_name)


async def list_templates(
    session: AsyncSession, *, tenant_id: uuid.UUID, inactive_only: bool = False
) -> list[AdTemplate]:
    """The tenant's catalog in storage-name order (only the inactive ones, when asked)."""
    query = sa.select(AdTemplate).where(AdTemplate.tenant_id == tenant_id)
    if inactive_only:
        query = query.where(AdTemplate.active.is_(False))
    return list((await session.scalars(query.order_by(AdTemplate.storage_name))).all())


# --- brands -----------------------------------------------------------------------------------


async def add_brand(
    session: AsyncSession, *, tenant_id: uuid.UUID, name: str, colors: list[str]
) -> Brand:
    """Create a brand.

    Raises:
        ConflictError: The tenant already has a brand of that name.
    """
    brand = Brand(tenant_id=tenant_id, name=name, colors=colors, active=True)
    return await _insert_unique(session, brand, "brand", "name", name)


async def list_brands(
    session: AsyncSession, *, tenant_id: uuid.UUID, include_inactive: bool = False
) -> list[Brand]:
    """The tenant's brands by name (active ones only unless asked)."""
    query = sa.select(Brand).where(Brand.tenant_id == tenant_id)
    if not include_inactive:
        query = query.where(Brand.active.is_(True))
    return list((await session.scalars(query.order_by(Brand.name))).all())


async def find_brands(
    session: AsyncSession, *, tenant_id: uuid.UUID, ref: str, for_update: bool = False
) -> list[Brand]:
    """The tenant's brands whose id or name is `ref` (names are unique per tenant)."""
    ref_id = as_uuid(ref)
    query = sa.select(Brand).where(
        Brand.tenant_id == tenant_id, Brand.id == ref_id if ref_id else Brand.name == ref
    )
    if for_update:
        query = query.with_for_update()
    return list((await session.scalars(query)).all())


async def rename_clashes_brand(
    session: AsyncSession, *, tenant_id: uuid.UUID, brand_id: uuid.UUID, name: str
) -> bool:
    """True when another brand of the tenant already has `name`."""
    other = await session.scalar(
        sa.select(Brand.id).where(
            Brand.tenant_id == tenant_id, Brand.name == name, Brand.id != brand_id
        )
    )
    return other is not None


# --- products ---------------------------------------------------------------------------------


async def add_product(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    values: dict[str, Any],
) -> Product:
    """Create a product under one of the tenant's brands (`values`: the other columns)."""
    product = Product(tenant_id=tenant_id, brand_id=brand_id, active=True, **values)
    session.add(product)
    await session.flush()
    return product


def _products_with_brand(tenant_id: uuid.UUID) -> sa.Select[Product, str]:
    return (
        sa.select(Product, Brand.name)
        .join(Brand, Brand.id == Product.brand_id)
        .where(Product.tenant_id == tenant_id)
    )


async def list_products(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID | None = None,
    include_inactive: bool = False,
) -> list[tuple[Product, str]]:
    """The tenant's products with their brand's name, by brand then product name."""
    query = _products_with_brand(tenant_id)
    if brand_id is not None:
        query = query.where(Product.brand_id == brand_id)
    if not include_inactive:
        query = query.where(Product.active.is_(True))
    rows = await session.execute(query.order_by(Brand.name, Product.name))
    return [(product, str(brand_name)) for product, brand_name in rows.all()]


async def find_products(
    session: AsyncSession, *, tenant_id: uuid.UUID, ref: str, for_update: bool = False
) -> list[tuple[Product, str]]:
    """The tenant's products whose id or name is `ref`, with their brand's name (a name may
    match several products, of different brands)."""
    ref_id = as_uuid(ref)
    query = _products_with_brand(tenant_id).where(
        Product.id == ref_id if ref_id else Product.name == ref
    )
    if for_update:
        query = query.with_for_update(of=Product)
    rows = await session.execute(query.order_by(Brand.name))
    return [(product, str(brand_name)) for product, brand_name in rows.all()]


async def product_name_taken(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID,
    name: str,
    other_than: uuid.UUID | None = None,
) -> bool:
    """True when the brand already has a product of that name (other than `other_than`)."""
    query = sa.select(Product.id).where(
        Product.tenant_id == tenant_id, Product.brand_id == brand_id, Product.name == name
    )
    if other_than is not None:
        query = query.where(Product.id != other_than)
    return (await session.scalar(query.limit(1))) is not None


async def live_job_count(session: AsyncSession, *, product_id: uuid.UUID) -> int:
    """Live (not deleted) jobs of a product."""
    count = await session.scalar(
        sa.select(sa.func.count())
        .select_from(ScheduledJob)
        .where(ScheduledJob.product_id == product_id, ScheduledJob.deleted_at.is_(None))
    )
    return int(count or 0)


# --- templates ----------------------------------------------------------------------------------


async def find_template(
    session: AsyncSession, *, tenant_id: uuid.UUID, ref: str, for_update: bool = False
) -> AdTemplate:
    """The tenant's template by id or storage name.

    Raises:
        NotFoundError: No such template.
    """
    ref_id = as_uuid(ref)
    query = sa.select(AdTemplate).where(
        AdTemplate.tenant_id == tenant_id,
        AdTemplate.id == ref_id if ref_id else AdTemplate.storage_name == ref,
    )
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise NotFoundError("template", ref)
    return row


async def deactivate_template(
    session: AsyncSession, *, tenant_id: uuid.UUID, ref: str, reason: str | None = None
) -> AdTemplate:
    """Take a template out of rotation on a person's word; `templates sync` keeps it out.

    Raises:
        NotFoundError: No such template.
    """
    template = await find_template(session, tenant_id=tenant_id, ref=ref, for_update=True)
    template.active = False
    reason = (reason or "").strip()
    template.inactive_reason = f"{DEACTIVATED_REASON}: {reason}" if reason else DEACTIVATED_REASON
    await session.flush()
    return template


def deactivated_by_a_person(inactive_reason: str | None) -> bool:
    """True for a template a person took out of rotation (only a person puts it back)."""
    return (inactive_reason or "").startswith(DEACTIVATED_REASON)
