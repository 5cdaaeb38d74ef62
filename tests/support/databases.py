"""Scratch databases for tests and benchmarks: created fresh, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

#: The PostgreSQL server tests use (trust auth on this machine and in CI).
PG_ADMIN_DSN = os.environ.get(
    "AD_SCHEDULER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def pg_available() -> bool:
    """True when the test PostgreSQL server answers."""
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def create_pg_database(prefix: str = "adsched_test") -> str:
    """Create an empty database; returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    """Drop a database created by `create_pg_database`, closing its connections first."""
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    """SQLAlchemy URL of database `name` on the test server."""
    base = PG_ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"{driver}://{base}/{name}"


@contextmanager
def scratch_pg_database(prefix: str = "adsched_test") -> Iterator[str]:
    """Sync helper for scripts: a scratch database URL (asyncpg driver), dropped on exit."""
    import asyncio

    name = asyncio.run(create_pg_database(prefix))
    try:
        yield pg_url(name)
    finally:
        asyncio.run(drop_pg_database(name))
