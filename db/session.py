"""The one place that creates database engines and sessions.

`DATABASE_URL` is a SQLAlchemy URL or the name of a prefect-sqlalchemy `AsyncSqlAlchemyConnector`
block (so a production password lives in a block, masked in the UI, not in an env var); empty means
the embedded SQLite file. Engines are cached per URL *and per event loop*: asyncpg connections
belong to the loop that opened them, and Prefect runs sync tasks' coroutines on other loops.

SQLite notes (https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl):
every transaction starts with `BEGIN IMMEDIATE` so that two writers queue on the busy timeout
instead of failing with "database is locked" when a read lock is upgraded; WAL lets readers on.

Brief outages (a PostgreSQL restart or failover, terminated backends) are waited out by the one
database retry policy here, `DB_RETRY` (tenacity, like the provider retries in
`blocks/retrying.py`, used by generators and `flows/exports/`): `session_scope` retries taking its
connection, and `retry_transaction` re-runs a whole short transaction. Only connection-class
errors are retried (`is_connection_error`); integrity, data and programming errors never are.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

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

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState
    from tenacity.wait import wait_base

logger = logging.getLogger(__name__)
T = TypeVar("T")

_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncEngine]] = (
    weakref.WeakKeyDictionary()
)

SQLITE_BUSY_TIMEOUT_S = 30


def embedded_url(settings: Settings) -> URL:
    """The URL of the embedded SQLite database."""
    return URL.create("sqlite+aiosqlite", database=str(settings.embedded_database_path))


async def resolve_database_url(settings: Settings | None = None) -> URL:
    """Turn `DATABASE_URL` (a URL, a block name or nothing) into a SQLAlchemy URL.

    A block name is loaded from the Prefect API once per process and remembered (see
    `forget_resolved_urls`); a name that does not load is not remembered.

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
    cached = _BLOCK_URLS.get(raw)
    if cached is None:
        # Once per process: a flow run opens dozens of sessions, and each lookup is an API call.
        cached = _BLOCK_URLS[raw] = await _url_from_block(raw)
    return cached


#: Connector blocks resolved so far in this process, by block name. A changed block reaches a
#: process that already resolved it only after a restart (a flow run is its own process).
_BLOCK_URLS: dict[str, URL] = {}


def forget_resolved_urls() -> None:
    """Drop the per-process cache of connector blocks resolved by `resolve_database_url`."""
    _BLOCK_URLS.clear()


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
    """Create an engine configured for this project (SQLite pragmas; on asyncpg, JIT off and a
    liveness check on checkout; pool pre-ping on other drivers)."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S})
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if url.get_driver_name() != "asyncpg":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    # JIT compilation never pays off for this application's short statements, and with it on,
    # asyncpg's type introspection (once per connection, for uuid[]) costs a round trip more.
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("server_settings", {}).setdefault("jit", "off")
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _check_liveness_on_checkout(engine)
    return engine


def _check_liveness_on_checkout(engine: AsyncEngine) -> None:
    """Refuse a pooled asyncpg connection the server has closed, without a round trip.

    SQLAlchemy's `pool_pre_ping` costs three round trips per checkout (BEGIN, a ping, ROLLBACK:
    ~20 per scheduled run). A restart, a failover or `pg_terminate_backend` closes the socket,
    which asyncpg sees (`is_closed()`): raising `DisconnectionError` on checkout makes the pool
    replace the connection, as a failed ping would (SQLAlchemy's "custom pessimistic ping",
    https://docs.sqlalchemy.org/en/20/core/pooling.html#custom-legacy-pessimistic-ping). A
    connection that dies while in use fails its statement either way; `retry_transaction` is
    for those.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise sa.exc.DisconnectionError("the server closed this pooled connection")


def prepare_process(settings: Settings | None = None) -> None:
    """Do the database set-up a process pays once, now rather than in its first query.

    Imports the configured database's driver (asyncpg alone is ~0.1-0.5 s of imports) and
    configures the ORM mappers (~0.1 s). A flow process calls it when its flow module is
    imported, which Prefect does before the run is set Running (a scheduled run's process is
    started ahead of its slot), so neither lands inside the run. Never raises: whatever it
    could not prepare is done by the first query, as without it.
    """
    settings = settings or get_settings()
    try:
        from sqlalchemy.orm import configure_mappers

        import db.models  # noqa: F401 - the mappers to configure

        configure_mappers()
        raw = settings.database_url.strip()
        if not raw:
            url = embedded_url(settings)
        elif "://" in raw:
            url = make_url(raw)
        else:
            # A connector block: its class now, its driver once the block is read.
            import prefect_sqlalchemy  # noqa: F401

            return
        url.get_dialect().import_dbapi()
    except Exception as exc:  # an optimisation only: the first query does it otherwise
        logger.debug("database set-up deferred to the first query (%s)", type(exc).__name__)


async def get_engine(url: URL | str | None = None) -> AsyncEngine:
    """The engine for `url` (default: from settings) on the running event loop, created once."""
    resolved = make_url(url) if url is not None else await resolve_database_url()
    key = resolved.render_as_string(hide_password=False)
    per_loop = _ENGINES.setdefault(asyncio.get_running_loop(), {})
    engine = per_loop.get(key)
    if engine is None:
        engine = per_loop[key] = new_async_engine(resolved)
    return engine


# --------------------------------------------------------------------------------------------
# Retrying through brief outages


def _default_backoff() -> wait_base:
    # tenacity is imported when a policy is made or used, not with this module (every flow
    # process imports it; the import is on the run's critical path).
    from tenacity import wait_exponential_jitter

    return wait_exponential_jitter(multiplier=0.5, max=8, jitter=0.5)


@dataclass
class DbRetrySettings:
    """How database work is retried through a brief outage; tests swap in their own `sleep`.

    The default waits 0.5, 1, 2, 4, 8, 8 s (plus up to 0.5 s jitter each): about 25 s in all,
    enough for a PostgreSQL restart or a managed failover, short enough that a real outage is
    reported within half a minute.

    Attributes:
        attempts: Attempts in all, the first included; None reads
            `AD_SCHEDULER_DB_RETRY_ATTEMPTS` (default 7) at each use.
        backoff: Tenacity wait strategy between attempts.
        sleep: Awaited with the seconds to wait between attempts.
    """

    attempts: int | None = None
    backoff: wait_base = field(default_factory=_default_backoff)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


#: The one database retry policy (replace the object to change it, e.g. in tests).
DB_RETRY = DbRetrySettings()

#: SQLSTATEs of a server that is going away or not letting us in: connection exceptions (08…),
#: operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now)
#: and too many connections (53300).
_CONNECTION_SQLSTATES = ("57P01", "57P02", "57P03", "53300")


def _causes(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen


def is_connection_error(error: BaseException) -> bool:
    """True when `error` says the database connection was lost or could not be made.

    Connection-class errors only: a dropped or terminated connection (SQLAlchemy marks it
    `connection_invalidated`), asyncpg's connection errors and SQLSTATE class 08, a server
    shutting down or refusing connections (57P01-03, 53300, a database not accepting
    connections), and the socket errors of a refused or reset connection. Integrity, data and
    programming errors are never connection errors, whatever caused them.
    """
    if isinstance(error, sa.exc.IntegrityError | sa.exc.DataError | sa.exc.ProgrammingError):
        return False
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa.exc.DisconnectionError):
        return True
    # asyncpg only when loaded: an error cannot come from a driver this process never imported.
    asyncpg = sys.modules.get("asyncpg")
    for cause in _causes(error):
        if asyncpg is not None and isinstance(
            cause, asyncpg.exceptions.PostgresConnectionError | asyncpg.ConnectionDoesNotExistError
        ):
            return True
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _CONNECTION_SQLSTATES):
            return True
        if asyncpg is not None and isinstance(
            cause, asyncpg.exceptions.ObjectNotInPrerequisiteStateError
        ):
            # 55000 is a general SQLSTATE; only its "not accepting connections" use is an outage.
            return "not currently accepting connections" in str(cause)
        if isinstance(cause, ConnectionError | TimeoutError):
            return True
    return False


def _retrying(what: str) -> AsyncRetrying:
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

    attempts = DB_RETRY.attempts or get_settings().db_retry_attempts

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # The type only: driver messages can carry host names and user names.
        logger.warning(
            "database unreachable during %s (attempt %d/%d, %s); retrying in %.1fs",
            what,
            state.attempt_number,
            attempts,
            type(error).__name__,
            wait,
        )

    async def sleep(seconds: float) -> None:
        await DB_RETRY.sleep(seconds)

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=DB_RETRY.backoff,
        retry=retry_if_exception(is_connection_error),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )


async def retry_transaction(
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    what: str,
    url: URL | str | None = None,
) -> T:
    """Run `work` in a short transaction of its own, re-run whole on connection errors.

    For short writes that must survive a brief outage (export bookkeeping, run records). `work`
    must be safe to run again: a connection lost during COMMIT may have committed the first
    attempt (write absolute values, or check the row's state first).

    Args:
        work: Called with a session inside a transaction; committed when it returns.
        what: What is being written, for the retry log line (no values, no secrets).
        url: The database (default: from settings).

    Returns:
        What `work` returned, from the attempt that committed.

    Raises:
        Exception: The last connection error once the policy's attempts are spent, or at once
            any other error.
    """
    async for attempt in _retrying(what):
        with attempt:
            async with session_scope(url, retry_connect=False) as session:
                return await work(session)
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


@asynccontextmanager
async def session_scope(
    url: URL | str | None = None, *, retry_connect: bool = True
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction: committed on success, rolled back on error.

    On a server database, the connection is taken before the body runs, retried by `DB_RETRY`
    while the server is unreachable (nothing has been executed yet, so this is always safe).
    An outage that begins inside the body is the caller's: see `retry_transaction`.
    """
    engine = await get_engine(url)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as session, session.begin():
        if retry_connect and engine.dialect.name != "sqlite":
            async for attempt in _retrying("connect"):
                with attempt:
                    await session.connection()
        yield session


async def dispose_engines() -> None:
    """Dispose every engine opened on the running loop (end of a flow run, CLI exit, tests)."""
    per_loop = _ENGINES.pop(asyncio.get_running_loop(), {})
    for engine in per_loop.values():
        await engine.dispose()
