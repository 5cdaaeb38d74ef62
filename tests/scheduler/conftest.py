"""SDK/CLI test fixtures: a tenant's catalog in the database, the SDK on the real server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from prefect.client.schemas.objects import WorkPool
from prefect.client.schemas.responses import DeploymentResponse

from db.models import AdTemplate, Product, ScheduledJob
from db.session import session_scope
from scheduler.sdk import AdScheduler
from tests.support.factories import make_brand, make_product, make_templates

#: Tests that are not about copying from the base deployment use a base name nobody deploys,
#: so the `prefect deploy` test cannot change what they see.
NO_BASE = "no-such-base"


@dataclass
class Catalog:
    """One tenant's product and library templates."""

    tenant_id: uuid.UUID
    product: Product
    templates: list[AdTemplate]
    db_url: str


@pytest_asyncio.fixture
async def catalog(db_url: str, tenant_id: uuid.UUID) -> Catalog:
    """A brand, a product and 4 library templates for a fresh tenant."""
    async with session_scope(db_url) as session:
        brand = await make_brand(session, tenant_id)
        product = await make_product(session, tenant_id, brand)
        templates = await make_templates(session, tenant_id, 4, prefix=f"t{tenant_id.hex[:6]}")
    return Catalog(tenant_id, product, templates, db_url)


@pytest_asyncio.fixture
async def ads(prefect_api: str, catalog: Catalog, data_dir: Any) -> AsyncIterator[AdScheduler]:
    """The SDK for the catalog's tenant, on the test database and the real Prefect server."""
    async with AdScheduler(
        catalog.tenant_id, database_url=catalog.db_url, base_deployment=NO_BASE
    ) as scheduler:
        yield scheduler


def recurring_spec(catalog: Catalog, **overrides: Any) -> dict[str, Any]:
    """A valid recurring job spec for the catalog's product."""
    spec: dict[str, Any] = {
        "name": f"Monday ads {uuid.uuid4().hex[:6]}",
        "product_id": str(catalog.product.id),
        "schedule": {"type": "recurring", "cron": "0 9 * * 1", "timezone": "America/New_York"},
        "max_runs": 8,
        "templates": {"mode": "unused", "count": 2},
    }
    spec.update(overrides)
    return spec


async def tenant_deployments(tenant_id: uuid.UUID) -> list[DeploymentResponse]:
    """Every deployment on the server tagged with the tenant."""
    async with get_client() as client:
        return await client.read_deployments(
            deployment_filter=DeploymentFilter(
                tags=DeploymentFilterTags(all_=[f"tenant:{tenant_id}"])
            )
        )


async def tenant_jobs(
    db_url: str, tenant_id: uuid.UUID, *, live_only: bool = False
) -> list[ScheduledJob]:
    """Every job row of the tenant."""
    stmt = sa.select(ScheduledJob).where(ScheduledJob.tenant_id == tenant_id)
    if live_only:
        stmt = stmt.where(ScheduledJob.deleted_at.is_(None))
    async with session_scope(db_url) as session:
        return list((await session.scalars(stmt)).all())


async def ensure_work_pool(name: str) -> WorkPool:
    """Create a process work pool (idempotent)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass
        return await client.read_work_pool(name)
