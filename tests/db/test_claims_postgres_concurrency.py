"""20 concurrent claimers on PostgreSQL, each in its own connection and transaction."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import async_sessionmaker

from db.queries.templates import claim_unused_templates
from db.session import new_async_engine, session_scope
from tests.support.factories import make_product, make_templates


async def test_twenty_concurrent_claimers_get_sixty_distinct_templates(pg_database_url) -> None:
    tenant_id = uuid.uuid4()
    async with session_scope(pg_database_url) as s:
        product = await make_product(s, tenant_id)
        await make_templates(s, tenant_id, 60)
    # A pool big enough that all 20 transactions are open at the same time.
    engine = new_async_engine(pg_database_url, pool_size=20, max_overflow=0)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    # Every transaction is open before any claims: the claims really race.
    barrier = asyncio.Barrier(20)

    async def claimer() -> list[str]:
        async with maker() as session, session.begin():
            await session.connection()  # open the transaction before the race starts
            await barrier.wait()
            result = await claim_unused_templates(
                session,
                tenant_id=tenant_id,
                product_id=product.id,
                flow_run_id=uuid.uuid4(),
                count=3,
            )
            return result.templates

    try:
        results = await asyncio.gather(*[claimer() for _ in range(20)])
    finally:
        await engine.dispose()
    taken = [t for r in results for t in r]
    assert all(len(r) == 3 for r in results)
    assert len(taken) == 60 and len(set(taken)) == 60
