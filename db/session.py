"""The one place that creates database engines and sessions.

`DATABASE_URL` is a SQLAlchemy URL or the name of a prefect-sqlalchemy `AsyncSqlAlchemyConnector`
block (so a production password lives in a block, masked in the UI, not in an env var); empty means
the embedded SQLite file. Engines are cached per URL *and per event loop*: asyncpg connections
belong to the loop that opened them, and Prefect runs sync tasks' coroutines on other loops.

SQLite notes (https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl):
every transaction starts with `BEGIN IMMEDIATE` so that two writers queue on the busy timeout
instead of failing with "database is locked" when a read lock is upgraded; WAL lets readers on.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from config import Settings, get_settings

_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncEngine]] = (
    weakref.WeakKeyDictionary()
)

SQLITE_BUSY_TIMEOUT_S = 30


def embedded_url(settings: Settings) -> URL:
    """The URL of the embedded SQLite database."""
    return URL.create("sqlite+aiosqlite", database=str(settings.embedded_database_path))


async def resolve_database_url(settings: Settings | None = None) -> URL:
    """Turn `DATABASE_URL` (a URL, a block name or nothing) into a SQLAlchemy URL.

    Raises:
        ValueError: The value is neither a valid URL nor the name of a saved connector block.
    """
    settings = settings or get_settings()
    raw = settings.database_url.strip()
    if not raw:
        return embedded_url(settings)
    if "://" in raw:
        try:
            return make_url(raw)
        except sa.exc.ArgumentError as exc:
            # The message would echo the URL, password included: name the problem, not the value.
            raise ValueError("DATABASE_URL is not a valid SQLAlchemy URL") from exc
    return await _url_from_block(raw)


async def _url_from_block(block_name: str) -> URL:
    from prefect_sqlalchemy import AsyncSqlAlchemyConnector, ConnectionComponents

    try:
        connector = await AsyncSqlAlchemyConnector.aload(block_name)
    except ValueError as exc:
        raise ValueError(
            f"DATABASE_URL names the block {block_name!r}, but no AsyncSqlAlchemyConnector "
            "block of that name is saved on the Prefect server"
        ) from exc
    info = connector.connection_info
    if isinstance(info, ConnectionComponents):
        return info.create_url()
    return make_url(str(info))


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the driver) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def new_async_engine(url: URL | str, **kwargs: Any) -> AsyncEngine:
    """Create an engine configured for this project (SQLite pragmas, pool pre-ping)."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S})
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


async def get_engine(url: URL | str | None = None) -> AsyncEngine:
    """The engine for `url` (default: from settings) on the running event loop, created once."""
    resolved = make_url(url) if url is not None else await resolve_database_url()
    key = resolved.render_as_string(hide_password=False)
    per_loop = _ENGINES.setdefault(asyncio.get_running_loop(), {})
    engine = per_loop.get(key)
    if engine is None:
        engine = per_loop[key] = new_async_engine(resolved)
    return engine


@asynccontextmanager
async def session_scope(url: URL | str | None = None) -> AsyncIterator[AsyncSession]:
    """A session in one transaction: committed on success, rolled back on error."""
    engine = await get_engine(url)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as session, session.begin():
        yield session


async def dispose_engines() -> None:
    """Dispose every engine opened on the running loop (end of a flow run, CLI exit, tests)."""
    per_loop = _ENGINES.pop(asyncio.get_running_loop(), {})
    for engine in per_loop.values():
        await engine.dispose()
