"""The one Alembic history goes from empty to head and back down on both databases."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from db.migrate import downgrade, upgrade
from db.models import Base
from db.session import new_async_engine
from tests.support.databases import create_pg_database, drop_pg_database, pg_url

SEED_TABLES = {"scheduled_jobs", "scheduled_job_runs", "product_template_usage"}


async def _tables_and_views(url: str) -> tuple[set[str], set[str]]:
    engine = new_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: (
                    set(sa.inspect(c).get_table_names()),
                    set(sa.inspect(c).get_view_names()),
                )
            )
    finally:
        await engine.dispose()


async def _round_trip(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    tables, views = await _tables_and_views(url)
    assert set(Base.metadata.tables) <= tables and SEED_TABLES <= tables
    assert {"v_active_scheduled_jobs", "v_recent_job_runs"} <= views
    await asyncio.to_thread(downgrade, url)
    tables, views = await _tables_and_views(url)
    assert tables <= {"alembic_version"} and not views
    await asyncio.to_thread(upgrade, url)


async def test_sqlite_up_down_up(tmp_path) -> None:
    await _round_trip(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


async def test_postgres_up_down_up_with_trigger(postgres_available) -> None:
    from tests.conftest import require_postgres

    require_postgres(postgres_available)
    name = await create_pg_database("adsched_migr")
    url = pg_url(name)
    try:
        await _round_trip(url)
        engine = new_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO brands (tenant_id, name, colors) "
                        "VALUES (gen_random_uuid(), 'b', '[]') "
                    )
                )
                before = await conn.scalar(sa.text("SELECT updated_at FROM brands"))
            async with engine.begin() as conn:
                await conn.execute(sa.text("UPDATE brands SET name = 'c'"))
                after = await conn.scalar(sa.text("SELECT updated_at FROM brands"))
            assert after > before  # kept by the PostgreSQL trigger, not by the ORM
        finally:
            await engine.dispose()
    finally:
        await drop_pg_database(name)
