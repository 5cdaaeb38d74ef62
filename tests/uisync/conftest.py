"""UI-sync and form fixtures: the SDK's catalog and scheduler, the UI's raw HTTP, a watcher."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest_asyncio
import sqlalchemy as sa

from db.models import ScheduledJob, ScheduledJobRun
from db.session import session_scope
from flows.ui_sync import UiSyncReport, watch_ui_changes
from tests.scheduler.conftest import ads, catalog  # noqa: F401  (fixtures)

T = TypeVar("T")
#: How long a UI change may take to reach the jobs table before a test fails (generous: the
#: machine is shared; the watcher's own latency is measured by bench/ui_sync.py).
DEADLINE_SECONDS = 20.0


@pytest_asyncio.fixture
async def ui(prefect_api: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the Prefect API, making the calls the Prefect UI makes."""
    async with httpx.AsyncClient(base_url=prefect_api.rstrip("/"), timeout=30) as http:
        yield http


class Watcher:
    """A `watch_ui_changes` loop running beside the test (what `ad-scheduler up` runs)."""

    def __init__(self, database_url: str) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            watch_ui_changes(interval=0.5, database_url=database_url, stop=self.stop)
        )

    async def close(self) -> UiSyncReport:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout=30)


@pytest_asyncio.fixture
async def watcher(catalog: Any) -> AsyncIterator[Watcher]:  # noqa: F811
    """The UI watcher on the test database, stopped (and awaited) at the end of the test."""
    running = Watcher(catalog.db_url)
    try:
        yield running
    finally:
        await running.close()


async def eventually(
    read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str
) -> tuple[T, float]:
    """Poll `read` until `ok` holds; returns the value and the seconds it took."""
    start = time.monotonic()
    while True:
        value = await read()
        if ok(value):
            return value, time.monotonic() - start
        if time.monotonic() - start > DEADLINE_SECONDS:
            raise AssertionError(f"not within {DEADLINE_SECONDS} s: {what}; last: {value!r}")
        await asyncio.sleep(0.1)


async def job_row(db_url: str, job_id: uuid.UUID) -> ScheduledJob:
    """The job's row as committed now (deleted or not)."""
    async with session_scope(db_url) as session:
        job = await session.get(ScheduledJob, job_id)
        assert job is not None
        return job


async def run_row(db_url: str, flow_run_id: uuid.UUID) -> ScheduledJobRun | None:
    """The mirror row of one flow run, if any."""
    async with session_scope(db_url) as session:
        return (
            await session.scalars(
                sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == flow_run_id)
            )
        ).first()
