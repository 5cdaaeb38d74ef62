"""20 concurrent claimers on PostgreSQL, each in its own connection and transaction."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker

from db.queries.templates import claim_unused_templates
from db.session import new_async_engine, session_scope
from tests.support.factories import make_product, make_templates


async def _product_with_templates(url: str, templates: int):
    """A new tenant's product and `templates` library templates: (tenant id, product)."""
    tenant_id = uuid.uuid4()
    async with session_scope(url) as s:
        product = await make_product(s, tenant_id)
        await make_templates(s, tenant_id, templates)
    return tenant_id, product


async def test_twenty_concurrent_claimers_get_sixty_distinct_templates(pg_database_url) -> None:
    tenant_id, product = await _product_with_templates(pg_database_url, 60)
    # A pool big enough that all 20 transactions are open at the same time.
    engine = new_async_engine(pg_database_url, pool_size=20, max_overflow=0)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    # Every transaction is open before any claims: the claims really race.
    barrier = asyncio.Barrier(20)
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: statements.append(statement),
    )

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
    # Each claimer passes over the templates the others hold: about one statement per claim
    # (20-23 measured; a claim that commits while another's pick runs can still cost that one a
    # lost round, three statements). Picking the same templates, 20 claimers made 347, one
    # loser's round after another: fewer than one lost round per claimer on average is the bar.
    assert len(statements) < 20 + 3 * 20, len(statements)


async def _waiting_on_a_lock(engine, pid: int) -> None:
    """Until the backend `pid` waits for a lock (polled from pg_locks: nothing to wait on)."""
    async with engine.connect() as conn:
        for _ in range(500):
            waiting = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"),
                {"pid": pid},
            )
            if waiting:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


async def test_a_claim_that_meets_only_held_templates_waits_for_their_claim(
    pg_database_url,
) -> None:
    tenant_id, product = await _product_with_templates(pg_database_url, 2)
    engine = new_async_engine(pg_database_url, pool_size=3, max_overflow=0)
    maker = async_sessionmaker(engine, expire_on_commit=False)

    async def claim(session, count: int) -> list[str]:
        result = await claim_unused_templates(
            session,
            tenant_id=tenant_id,
            product_id=product.id,
            flow_run_id=uuid.uuid4(),
            count=count,
            when_exhausted="skip",
        )
        return result.templates

    try:
        async with maker() as first:
            await first.begin()
            assert await claim(first, 2) == ["tpl-0000.png", "tpl-0001.png"]
            # A second claimer finds both held: it does not skip to "none left" but waits for
            # the first claim to end…
            async with maker() as second, second.begin():
                pid = await second.scalar(sa.text("SELECT pg_backend_pid()"))
                waiter = asyncio.ensure_future(claim(second, 1))
                await _waiting_on_a_lock(engine, pid)
                assert not waiter.done()
                # …which fails (its run died before it committed): the template is its.
                await first.rollback()
                assert await asyncio.wait_for(waiter, timeout=30) == ["tpl-0000.png"]
    finally:
        await engine.dispose()
