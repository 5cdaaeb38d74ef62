"""What a benchmark runs against: a real Prefect server and a migrated scratch app database.

Both on scratch PostgreSQL databases, bound to 127.0.0.1, and removed on exit; the process
(and the Prefect client settings) point at the server while the block runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.databases import create_pg_database, drop_pg_database, pg_url
from tests.support.prefect_server import running_prefect_server


@dataclass(frozen=True)
class BenchStack:
    """The running server's API URL, and the app database (its URL and its name)."""

    api_url: str
    db_url: str
    db_name: str


@contextmanager
def bench_stack(prefix: str = "adsched_bench") -> Iterator[BenchStack]:
    """Start a Prefect server and create and migrate an app database named `prefix_…`.

    `PREFECT_API_URL` is set in the environment (for child processes) and in Prefect's settings
    (for this process) until the block ends; then the database is dropped and the server
    stopped.
    """
    from db.migrate import upgrade

    print("starting a Prefect server on a scratch PostgreSQL database …", flush=True)
    with running_prefect_server() as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        from prefect.settings import PREFECT_API_URL, temporary_settings

        name = asyncio.run(create_pg_database(prefix))
        try:
            db_url = pg_url(name)
            upgrade(db_url)
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                yield BenchStack(api_url=api_url, db_url=db_url, db_name=name)
        finally:
            asyncio.run(drop_pg_database(name))
