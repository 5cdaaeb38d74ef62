"""The run's progress artifact (`flows.pipeline.ProgressReporter`) on a real Prefect server."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

from flows.pipeline import ProgressReporter

pytestmark = pytest.mark.usefixtures("prefect_api")


async def _progress(artifact_id: object) -> float:
    async with get_client() as client:
        (artifact,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id]))
        )
    return float(artifact.data)  # type: ignore[arg-type]


@flow(name="progress-probe")
async def _many_updates() -> ProgressReporter:
    reporter = ProgressReporter(200, interval=0.2)
    for finished in range(1, 200):
        reporter.update(finished)
        await asyncio.sleep(0.002)  # ~0.4 s of work: about two intervals
    await reporter.close()
    return reporter


@flow(name="progress-probe")
async def _close_at_once() -> ProgressReporter:
    reporter = ProgressReporter(4, interval=30.0)
    reporter.update(1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(reporter.close(), timeout=10)
    return reporter


async def test_updates_are_coalesced_and_the_last_count_is_shown() -> None:
    reporter = await _many_updates()
    assert reporter.artifact_id is not None
    assert await _progress(reporter.artifact_id) == 100.0
    # Created, at most one update per interval while the work went on, then the final count.
    assert 2 <= reporter.calls <= 5


async def test_close_does_not_wait_for_the_interval() -> None:
    reporter = await _close_at_once()
    assert await _progress(reporter.artifact_id) == 100.0
