"""UI test fixtures: one real Prefect server with its UI per session, one headless Chromium
per module.

One server for every module, not one each: Prefect's in-process events worker (which carries
task-run states to the server) stays bound to the first server it met, so a second server in the
same process never hears of the task runs of later flows.

Mandatory under CI=true (a missing chromium fails the run); skipped elsewhere when Debian's
chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext

from tests.conftest import IN_CI
from tests.ui.browser import CHROMIUM, chromium, chromium_available

CHROMIUM_HINT = f"UI tests skipped: no chromium at {CHROMIUM} (apt-get install -y chromium)"


def _app_database(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from config import get_settings

    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    return url


@pytest.fixture
def sqlite_app(sqlite_database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app database on SQLite (one backend is enough for what the UI shows)."""
    return _app_database(sqlite_database_url, monkeypatch)


@pytest.fixture
def pg_app(pg_database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app database on PostgreSQL (for what runs concurrently)."""
    return _app_database(pg_database_url, monkeypatch)


@pytest.fixture(scope="session")
def ui_url(prefect_api: str) -> str:
    """The Prefect UI of the session's server (tests/conftest.py `prefect_api`: it serves its UI,
    and PREFECT_API_URL points at it, so flows and the SDK use it too)."""
    return prefect_api.removesuffix("/api")


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[BrowserContext]:
    """Headless Debian chromium for one module (a fresh profile)."""
    if not chromium_available():
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM_HINT}: the UI tests are mandatory")
        pytest.skip(CHROMIUM_HINT)
    async with chromium() as context:
        yield context
