"""Two generation runs in separate processes share one provider limit on a real Prefect server.

The fake provider, not the test, measures concurrency: it counts requests in flight. Both worker
processes load the same saved generator block and hold `provider_slot` around each call, so the
provider never sees more than the block's `max_in_flight` at once, whatever the processes do.
Needs the `prefect_api` fixture (a Prefect server on PostgreSQL) and `flows/limits.py`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import cast

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from pydantic import SecretStr

from blocks.generators.gemini import GeminiImageGenerator
from tests.support.http_fake import GEMINI_KEY, FakeServer, gemini_default, running

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
MAX_IN_FLIGHT = 2
PER_PROCESS = 6


async def start_worker(block: str, job: str, home: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, PREFECT_HOME=str(home), PYTHONPATH=str(ROOT))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.generators.limit_worker",
        "--block",
        block,
        "--job",
        job,
        "--templates",
        str(PER_PROCESS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


async def test_two_processes_never_exceed_the_shared_limit(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.limits import ensure_provider_limit

    with running(FakeServer(gemini_default())) as fake:
        fake.latency_s = 0.2  # simulated provider latency, so that calls overlap
        name = f"gemini-limit-test-{uuid.uuid4().hex[:8]}"
        generator = GeminiImageGenerator(
            api_key=SecretStr(GEMINI_KEY),
            base_url=f"{fake.url}/v1beta",
            provider_limit=name,
            max_in_flight=MAX_IN_FLIGHT,
            requests_per_minute=None,
        )
        await generator.save(name)
        await ensure_provider_limit(generator)

        workers = [await start_worker(name, f"job-{i}", tmp_path / f"home-{i}") for i in range(2)]
        try:
            for worker in workers:
                assert worker.stdout is not None
                line = await asyncio.wait_for(worker.stdout.readline(), 60)
                assert line.strip() == b"ready", line
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write(b"go\n")
                await worker.stdin.drain()
            outputs = [await asyncio.wait_for(w.communicate(), 120) for w in workers]
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()

        for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr.decode()[-3000:]
            assert stdout.decode().split()[-3:] == ["done", str(PER_PROCESS), "0"]
        assert len(fake.seen) == 2 * PER_PROCESS
        assert 1 <= fake.peak_in_flight <= MAX_IN_FLIGHT

        # The key stays in the block: not in the runs' parameters nor in the block as the API
        # shows it without include_secrets.
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["provider-limit-worker"]))
            )
            document = await client.read_block_document_by_name(
                name, "gemini-image-generator", include_secrets=False
            )
        assert runs
        assert all(GEMINI_KEY not in str(run.parameters) for run in runs)
        assert GEMINI_KEY not in str(document.data)
        # `aload` is wrapped by prefect's `inject_client`, which hides its `Self` return type.
        loaded = cast(GeminiImageGenerator, await GeminiImageGenerator.aload(name))
        assert loaded.api_key.get_secret_value() == GEMINI_KEY


async def test_a_paced_limit_never_starts_more_than_its_window_allows_and_leaks_nothing(
    prefect_api: str,
) -> None:
    import time

    from flows.limits import (
        ProviderLimit,
        ProviderSlots,
        _window_of,
        ensure_provider_limit,
        rate_limit_name,
    )

    # 20 starts per second: L = 20 starts in any W = 1.02 s (the window's safety margin
    # included), shared by two runs of this process as if they were two workers.
    limit = ProviderLimit(f"paced-{uuid.uuid4().hex[:8]}", per_second=20)
    slots_per_window, window = _window_of(limit)
    await ensure_provider_limit(limit)
    starts: list[float] = []

    async def run(requests: int) -> None:
        async with get_client() as client, ProviderSlots(limit, client) as slots:

            async def one() -> None:
                async with slots.slot():
                    starts.append(time.monotonic())

            await asyncio.gather(*(one() for _ in range(requests)))

    await asyncio.gather(run(30), run(30))

    assert len(starts) == 60
    starts.sort()
    # The guarantee a provider's token bucket needs: the (L+1)-th start after any start comes
    # at least one window later.
    gaps = [b - a for a, b in zip(starts, starts[slots_per_window:], strict=False)]
    assert min(gaps) >= window - 0.005  # clock granularity
    async with get_client() as client:
        rate = await client.read_global_concurrency_limit_by_name(rate_limit_name(limit.name))
    assert rate.limit == slots_per_window and rate.active_slots == 0
