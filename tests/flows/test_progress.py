"""The run's progress artifact (`flows.progress.ProgressReporter`) on a real Prefect server."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

from flows.progress import ProgressReporter

pytestmark = pytest.mark.usefixtures("prefect_api")


async def _progress(artifact_id: object) -> float:
    async with get_client() as client:
        (artifact,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id]))
        )
    return float(artifact.data)  # type: ignore[arg-type]


@flow(name="progress-probe")
async def _many_updates() -> ProgressReporter:
    reporter = ProgressReporter(200, interval=0.2, delay=0)
    for finished in range(1, 200):
        reporter.update(finished)
        await asyncio.sleep(0.002)  # ~0.4 s of work: about two intervals
    await reporter.close()
    return reporter


@flow(name="progress-probe")
async def _close_at_once() -> ProgressReporter:
    reporter = ProgressReporter(4, interval=30.0, delay=0)
    reporter.update(1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(reporter.close(), timeout=10)
    return reporter


@flow(name="progress-probe")
async def _quick_run() -> ProgressReporter:
    reporter = ProgressReporter(4, interval=0.1, delay=5.0)
    for finished in range(1, 5):
        reporter.update(finished)
    await asyncio.wait_for(reporter.close(), timeout=10)
    return reporter


@flow(name="progress-probe")
async def _slow_start() -> ProgressReporter:
    reporter = ProgressReporter(4, interval=30.0, delay=0.3)
    reporter.update(3)
    # The work goes on past the delay: the artifact appears (with 3 of 4) before the close.
    for _ in range(200):
        if reporter.artifact_id is not None:
            break
        await asyncio.sleep(0.05)  # polling for the reporter's background creation
    created = reporter.artifact_id
    assert created is not None
    assert await _progress(created) == 75.0
    await asyncio.wait_for(reporter.close(), timeout=10)
    return reporter


@flow(name="progress-probe")
async def _one_template() -> ProgressReporter:
    reporter = ProgressReporter(1, interval=0.1, delay=0)
    await asyncio.sleep(0.3)  # past the delay: a run of two templates would show its bar now
    reporter.update(1)
    await asyncio.wait_for(reporter.close(), timeout=10)
    return reporter


async def test_a_run_of_one_template_shows_no_progress_bar() -> None:
    reporter = await _one_template()
    assert (reporter.artifact_id, reporter.calls) == (None, 0)


async def test_a_run_that_ends_within_the_delay_shows_no_progress_bar() -> None:
    reporter = await _quick_run()
    assert (reporter.artifact_id, reporter.calls) == (None, 0)


async def test_a_longer_run_shows_its_count_so_far_once_the_delay_is_over() -> None:
    reporter = await _slow_start()
    # Created with the count at that moment (3 of 4), then the final count at close.
    assert reporter.calls == 2
    assert await _progress(reporter.artifact_id) == 100.0


async def test_updates_are_coalesced_and_the_last_count_is_shown() -> None:
    reporter = await _many_updates()
    assert reporter.artifact_id is not None
    assert await _progress(reporter.artifact_id) == 100.0
    # Created, at most one update per interval while the work went on, then the final count.
    assert 2 <= reporter.calls <= 5


async def test_close_does_not_wait_for_the_interval() -> None:
    reporter = await _close_at_once()
    assert await _progress(reporter.artifact_id) == 100.0
