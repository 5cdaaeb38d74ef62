"""The asyncpg pool: a connection the server closed is replaced at checkout, with no ping.

Real PostgreSQL: the server terminates the pooled connection's backend (`pg_terminate_backend`,
what a restart or failover does to it) between two transactions of the same engine.
"""

from __future__ import annotations

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event

from db.session import dispose_engines, get_engine, session_scope
from tests.support.databases import PG_ADMIN_DSN


async def _backend_pid(url: str) -> int:
    async with session_scope(url) as session:
        return int(await session.scalar(sa.text("SELECT pg_backend_pid()")))


async def test_a_connection_the_server_closed_is_replaced_at_checkout(
    pg_database_url: str,
) -> None:
    await dispose_engines()  # a pool of its own: one connection, checked out in turn
    engine = await get_engine(pg_database_url)
    statements: list[str] = []
    pings: list[object] = []
    ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda conn: pings.append(conn) or ping(conn)  # type: ignore[method-assign]
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    pooled: list[object] = []
    event.listen(engine.sync_engine, "checkin", lambda dbapi, _record: pooled.append(dbapi))
    try:
        first = await _backend_pid(pg_database_url)
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
            # Until this loop has read the server's goodbye on the pooled connection: the round
            # trips of this wait let it run. (The backend leaves pg_stat_activity before its
            # socket is closed: on a loaded machine, waiting for that alone was too early.)
            driver = pooled[-1].driver_connection  # type: ignore[attr-defined]
            for _ in range(100_000):
                if driver.is_closed():
                    break
                await admin.fetchval("SELECT 1")
            assert driver.is_closed(), "the pooled connection never saw its backend end"
        finally:
            await admin.close()
        second = await _backend_pid(pg_database_url)
        assert second != first
        # A third transaction reuses the live connection: no ping statement was ever sent.
        assert await _backend_pid(pg_database_url) == second
        assert statements == ["SELECT pg_backend_pid()"] * 3
        assert pings == []
    finally:
        await dispose_engines()


async def test_jit_is_off_on_application_connections(pg_database_url: str) -> None:
    try:
        async with session_scope(pg_database_url) as session:
            assert await session.scalar(sa.text("SHOW jit")) == "off"
    finally:
        await dispose_engines()
