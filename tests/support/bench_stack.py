"""What a benchmark runs against: a real Prefect server and a migrated scratch app database.

Both on scratch PostgreSQL databases, bound to 127.0.0.1, and removed on exit; the process
(and the Prefect client settings) point at the server while the block runs.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.databases import create_pg_database, drop_pg_database, pg_url
from tests.support.prefect_server import running_prefect_server


@dataclass(frozen=True)
class BenchStack:
    """The running server's API URL, and the app database (its URL and its name)."""

    api_url: str
    db_url: str
    db_name: str


@contextmanager
def bench_stack(prefix: str = "adsched_bench") -> Iterator[BenchStack]:
    """Start a Prefect server and create and migrate an app database named `prefix_…`.

    `PREFECT_API_URL` is set in the environment (for child processes) and in Prefect's settings
    (for this process) until the block ends; then the database is dropped and the server
    stopped.
    """
    from db.migrate import upgrade

    print("starting a Prefect server on a scratch PostgreSQL database …", flush=True)
    with running_prefect_server() as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        from prefect.settings import PREFECT_API_URL, temporary_settings

        name = asyncio.run(create_pg_database(prefix))
        try:
            db_url = pg_url(name)
            upgrade(db_url)
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                yield BenchStack(api_url=api_url, db_url=db_url, db_name=name)
        finally:
            asyncio.run(drop_pg_database(name))


async def seed_bench_catalog(
    db_url: str, tenant_id: uuid.UUID, *, templates: int = 10
) -> uuid.UUID:
    """A brand, a product and `templates` catalog templates for the tenant; returns the product."""
    from db.models import AdTemplate, Brand, Product
    from db.session import session_scope

    async with session_scope(db_url) as session:
        brand = Brand(tenant_id=tenant_id, name="Bench brand", colors=["#0f766e"])
        session.add(brand)
        await session.flush()
        product = Product(tenant_id=tenant_id, brand_id=brand.id, name="Bench product")
        session.add(product)
        session.add_all(
            AdTemplate(tenant_id=tenant_id, storage_name=f"bench-{i}.png") for i in range(templates)
        )
        await session.flush()
        return product.id
