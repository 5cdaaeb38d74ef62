"""Rows for tests: each helper inserts real rows through the ORM under the given tenant."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AdRun, AdTemplate, Brand, GeneratedAd, Product, ScheduledJob, ScheduledJobRun
from domain.params import JobParameters


async def make_brand(session: AsyncSession, tenant_id: uuid.UUID, **kw: Any) -> Brand:
    brand = Brand(
        tenant_id=tenant_id,
        name=kw.pop("name", f"Brand {uuid.uuid4().hex[:6]}"),
        colors=kw.pop("colors", ["#0f766e", "#f97316", "#fefce8"]),
        **kw,
    )
    session.add(brand)
    await session.flush()
    return brand


async def make_product(
    session: AsyncSession, tenant_id: uuid.UUID, brand: Brand | None = None, **kw: Any
) -> Product:
    brand = brand or await make_brand(session, tenant_id)
    product = Product(
        tenant_id=tenant_id,
        brand_id=brand.id,
        name=kw.pop("name", "Trail Runner 2"),
        description=kw.pop("description", "A light trail shoe."),
        key_benefits=kw.pop("key_benefits", ["Grips wet rock", "Weighs 240 g"]),
        brand_colors=kw.pop("brand_colors", list(brand.colors)),
        hooks=kw.pop("hooks", ["Run further", "Own the trail", "Light on your feet"]),
        image_paths=kw.pop("image_paths", []),
        **kw,
    )
    session.add(product)
    await session.flush()
    return product


async def make_templates(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    count: int,
    *,
    prefix: str = "tpl",
    brand_id: uuid.UUID | None = None,
    **kw: Any,
) -> list[AdTemplate]:
    templates = [
        AdTemplate(
            tenant_id=tenant_id,
            storage_name=f"{prefix}-{i:04d}.png",
            name=f"{prefix} {i}",
            brand_id=brand_id,
            **kw,
        )
        for i in range(count)
    ]
    session.add_all(templates)
    await session.flush()
    return templates


async def make_job(
    session: AsyncSession, tenant_id: uuid.UUID, product: Product, **kw: Any
) -> ScheduledJob:
    params = kw.pop("parameters", JobParameters().model_dump(mode="json"))
    job = ScheduledJob(
        tenant_id=tenant_id,
        product_id=product.id,
        brand_id=product.brand_id,
        name=kw.pop("name", f"job-{uuid.uuid4().hex[:6]}"),
        schedule_type=kw.pop("schedule_type", "recurring"),
        cron_expression=kw.pop("cron_expression", "0 9 * * 1"),
        template_mode=kw.pop("template_mode", "unused"),
        template_count=kw.pop("template_count", 3),
        parameters=params,
        **kw,
    )
    session.add(job)
    await session.flush()
    return job


async def make_ad_run(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    product: Product,
    template: str,
    *,
    job_run: ScheduledJobRun | None = None,
    ads: int = 0,
    **kw: Any,
) -> AdRun:
    ad_run = AdRun(
        tenant_id=tenant_id,
        product_id=product.id,
        template_storage_name=template,
        scheduled_job_run_id=job_run.id if job_run else None,
        scheduled_job_id=job_run.scheduled_job_id if job_run else None,
        status=kw.pop("status", "completed"),
        **kw,
    )
    session.add(ad_run)
    await session.flush()
    for i in range(ads):
        session.add(
            GeneratedAd(
                tenant_id=tenant_id,
                ad_run_id=ad_run.id,
                variation_index=i,
                storage_path=f"ads/{tenant_id}/{ad_run.id}/variation-{i + 1}.png",
                headline=f"Headline {i + 1}",
                width=1080,
                height=1080,
                size_bytes=1000,
            )
        )
    await session.flush()
    return ad_run
