"""UI test fixtures: one real Prefect server with its UI per session, one headless Chromium
per module.

One server for every module, not one each: Prefect's in-process events worker (which carries
task-run states to the server) stays bound to the first server it met, so a second server in the
same process never hears of the task runs of later flows.

Mandatory under CI=true (a missing chromium fails the run); skipped elsewhere when Debian's
chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext

from scheduler.local_prefect import local_prefect_server
from tests.conftest import IN_CI, require_postgres
from tests.support.databases import scratch_pg_database
from tests.support.prefect_server import FAST_SERVICES
from tests.ui.browser import CHROMIUM, chromium, chromium_available

CHROMIUM_HINT = f"UI tests skipped: no chromium at {CHROMIUM} (apt-get install -y chromium)"


@pytest.fixture(scope="session")
def ui_url(postgres_available: bool) -> Iterator[str]:
    """A Prefect server with its UI (PostgreSQL, 127.0.0.1) for the session; yields the UI's
    base URL. PREFECT_API_URL points at it meanwhile, so flows and the SDK use it too."""
    require_postgres(postgres_available)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    services = {**FAST_SERVICES, "PREFECT_SERVER_UI_ENABLED": "true"}
    with (
        scratch_pg_database("adsched_prefect_ui") as database_url,
        tempfile.TemporaryDirectory(prefix="prefect-home-") as home,
        local_prefect_server(Path(home), database_url=database_url, extra_env=services) as api,
    ):
        # The events worker carries task-run states; one bound to another server (an earlier
        # fixture's) would keep sending them there: drained, the next one binds to this server.
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = api
        try:
            with temporary_settings(updates={PREFECT_API_URL: api}):
                yield api.removesuffix("/api")
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[BrowserContext]:
    """Headless Debian chromium for one module (a fresh profile)."""
    if not chromium_available():
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM_HINT}: the UI tests are mandatory")
        pytest.skip(CHROMIUM_HINT)
    async with chromium() as context:
        yield context
