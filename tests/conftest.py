"""Shared fixtures: real PostgreSQL and SQLite databases, a real Prefect server.

Every test creates the rows it needs under a fresh tenant id, so tests share the migrated
databases (one per backend per session) without depending on each other's leftovers or order.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from config import get_settings
from db.migrate import upgrade
from db.session import dispose_engines
from tests.support.databases import create_pg_database, drop_pg_database, pg_available, pg_url

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_HINT = (
    "PostgreSQL tests skipped: no server at AD_SCHEDULER_TEST_PG "
    "(default postgresql://postgres@127.0.0.1:5432/postgres); start one to enable them"
)


@pytest_asyncio.fixture(scope="session")
async def postgres_available() -> bool:
    """Whether PostgreSQL answers; with CI=true a missing server fails the run."""
    ok = await pg_available()
    if not ok and IN_CI:
        pytest.fail("CI=true but PostgreSQL is unreachable: the PostgreSQL tests are mandatory")
    return ok


def require_postgres(available: bool) -> None:
    """Skip (outside CI) when PostgreSQL is missing."""
    if not available:
        pytest.skip(PG_HINT)


@pytest_asyncio.fixture(scope="session")
async def pg_database_url(postgres_available: bool) -> AsyncIterator[str]:
    """A migrated scratch PostgreSQL database for the whole session."""
    require_postgres(postgres_available)
    name = await create_pg_database()
    url = pg_url(name)
    await asyncio.to_thread(upgrade, url)
    try:
        yield url
    finally:
        await dispose_engines()
        await drop_pg_database(name)


@pytest_asyncio.fixture(scope="session")
async def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A migrated scratch SQLite database for the whole session."""
    path = tmp_path_factory.mktemp("sqlite") / "app.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database, once per backend."""
    name = "sqlite_database_url" if request.param == "sqlite" else "pg_database_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def use_database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the application's settings (DATABASE_URL) at the test database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


@pytest.fixture
def tenant_id() -> uuid.UUID:
    """A fresh tenant: rows created under it belong to this test alone."""
    return uuid.uuid4()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data folder (local storage) for one test."""
    monkeypatch.setenv("AD_SCHEDULER_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    return tmp_path


@pytest.fixture(scope="session")
def prefect_api(postgres_available: bool) -> Iterator[str]:
    """A real Prefect server on PostgreSQL, with its UI, for the session; PREFECT_API_URL points
    at it. One server for the whole session: a second one set session-wide would leave every
    later test talking to it (and Prefect's events worker stays bound to the first it used)."""
    require_postgres(postgres_available)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.prefect_server import running_prefect_server

    with running_prefect_server(ui=True) as api_url:
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = api_url
        try:
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                yield api_url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


def pytest_report_header(config: pytest.Config) -> str | None:
    """One line at the top of the run when the PostgreSQL tests will skip."""
    if asyncio.run(pg_available()):
        return None
    if IN_CI:
        return "CI=true and PostgreSQL is unreachable: the PostgreSQL tests will FAIL"
    return PG_HINT
