"""The team's existing database (seed tables with rows, their own products/ad_runs) for tests."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.support.databases import PG_ADMIN_DSN, create_pg_database, pg_url

HERE = Path(__file__).resolve().parent
#: A verbatim copy of ../shared/seed-schema.sql (the seed's three tables).
SEED_SCHEMA = HERE / "seed_schema.sql"
LEGACY_SQL = HERE / "legacy_database.sql"

#: Ids of the legacy rows the tests refer to.
PRODUCT_TRAIL = "11111111-0000-0000-0000-000000000001"
JOB_RECURRING = "22222222-0000-0000-0000-000000000001"
JOB_PAUSED = "22222222-0000-0000-0000-000000000002"
JOB_COMPLETED = "22222222-0000-0000-0000-000000000003"
JOB_ONE_TIME = "22222222-0000-0000-0000-000000000004"
JOB_BAD = "22222222-0000-0000-0000-000000000005"
JOB_DONE_BY_HISTORY = "22222222-0000-0000-0000-000000000006"


def legacy_sql() -> str:
    """The whole script: the team's tables, the seed's tables, views, trigger and rows."""
    return LEGACY_SQL.read_text().replace("-- @SEED_SCHEMA@", SEED_SCHEMA.read_text())


async def create_legacy_database(prefix: str = "adsched_legacy") -> tuple[str, str]:
    """A new database holding the team's data; returns (name, SQLAlchemy asyncpg URL)."""
    name = await create_pg_database(prefix)
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(legacy_sql())
    finally:
        await conn.close()
    return name, pg_url(name)


async def snapshot(url: str) -> dict[str, object]:
    """Everything a dry run must not change: every row of every table, the columns, the
    constraints, indexes, views and triggers of the current schema."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        rows = {
            t: sorted(str(tuple(r.values())) for r in await conn.fetch(f'SELECT * FROM "{t}"'))
            for t in tables
        }
        columns = [
            tuple(r.values())
            for r in await conn.fetch(
                "SELECT table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
            )
        ]
        constraints = [
            tuple(r.values())
            for r in await conn.fetch(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
            )
        ]
        indexes = [
            tuple(r.values())
            for r in await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        views = [
            tuple(r.values())
            for r in await conn.fetch(
                "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        triggers = [
            tuple(r.values())
            for r in await conn.fetch(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE NOT tgisinternal ORDER BY 1"
            )
        ]
        functions = [
            tuple(r.values())
            for r in await conn.fetch(
                "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p "
                "WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1"
            )
        ]
    finally:
        await conn.close()
    return {
        "tables": tables,
        "rows": rows,
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "views": views,
        "triggers": triggers,
        "functions": functions,
    }
