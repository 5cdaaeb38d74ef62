"""One database transaction for an SDK call, with driver failures told as `DatabaseError`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from db.driver import AsyncSession, IntegrityError, SQLAlchemyError
from db.session import session_scope
from scheduler.errors import DatabaseError, database_problem


@asynccontextmanager
async def transaction(database_url: str | None) -> AsyncIterator[AsyncSession]:
    """A transaction on the application database (committed when the block ends cleanly).

    Raises:
        DatabaseError: The database is unreachable or refused a statement (cause chained, no
            credentials in the message). An `IntegrityError` passes through unchanged: the
            caller knows which uniqueness rule it means.
    """
    try:
        async with session_scope(database_url) as session:
            yield session
    except IntegrityError:
        raise
    except (SQLAlchemyError, ConnectionError, TimeoutError, socket.gaierror) as exc:
        raise DatabaseError(database_problem(exc)) from exc
