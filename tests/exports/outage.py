"""A real outage of the app database: PostgreSQL refuses it new sessions and drops the open ones.

`ALTER DATABASE … ALLOW_CONNECTIONS false` plus `pg_terminate_backend` on its sessions, issued
from a separate admin connection (to the `postgres` database), is what a restart or failover
looks like to the application: pooled connections die mid-use and reconnects are refused until
the test allows connections again. The outage can be started from a fake provider's server
thread (`begin_blocking`), so it begins exactly while the sender waits for the provider's answer.
"""

from __future__ import annotations

import asyncio
import threading

import asyncpg
from sqlalchemy.engine import make_url

from tests.support.databases import PG_ADMIN_DSN


class DatabaseOutage:
    """Make one PostgreSQL database unreachable, and reachable again."""

    def __init__(self, database_url: str) -> None:
        name = make_url(database_url).database
        assert name, "the outage needs a PostgreSQL database name"
        self.database = name
        self.active = threading.Event()
        self.began = 0

    async def _set(self, *, allow: bool) -> None:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(
                f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS {"true" if allow else "false"}'
            )
            if not allow:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.database,
                )
        finally:
            await admin.close()

    async def begin(self) -> None:
        """Refuse new sessions and terminate the open ones."""
        await self._set(allow=False)
        self.began += 1
        self.active.set()

    async def end(self) -> None:
        """Accept sessions again."""
        await self._set(allow=True)
        self.active.clear()

    def begin_blocking(self) -> None:
        """`begin` from a thread without an event loop (a fake server's request thread)."""
        asyncio.run(self.begin())
