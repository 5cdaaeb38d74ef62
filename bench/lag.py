"""Benchmark: lag from a cron run's scheduled time to its flow starting, with tuned worker settings.

A job registered through the SDK fires every minute; a process worker started with
`scheduler.local_prefect.TUNED_WORKER_ENV` picks runs up ahead of time (their processes start
early and wait for their slot). `bench/e2e.py` measures the same lag for one-time slots on both
Prefect backends, beside a bare flow. Lag = the flow run's start time minus
its expected start time, as Prefect records them, over RUNS runs. The design it replaces polled a
jobs table every 60 s: up to 60 s of lag.

Runs its own Prefect server and app database (scratch PostgreSQL) and worker; takes RUNS+1 min.
Last stdout line: {"lag_p50_s", "lag_p95_s", "runs"}.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS = int(os.environ.get("LAG_RUNS", "5"))


async def _measure(product_id: uuid.UUID, tenant: uuid.UUID) -> list[float]:
    from prefect.client.orchestration import get_client

    from scheduler.sdk import AdScheduler

    async with AdScheduler(tenant) as ads:
        job = await ads.create(
            {
                "name": f"lag-bench-{uuid.uuid4().hex[:6]}",
                "product_id": str(product_id),
                "schedule": {"type": "recurring", "cron": "* * * * *", "timezone": "UTC"},
                "max_runs": RUNS,
                "templates": {"mode": "unused", "count": 1},
                "ad": {"variations": 1},
            }
        )
    assert job.prefect_deployment_id is not None
    deadline = time.monotonic() + (RUNS + 3) * 60
    lags: list[float] = []
    while time.monotonic() < deadline:
        async with get_client() as client:
            runs = await client.read_flow_runs()
        done = [
            r
            for r in runs
            if r.deployment_id == job.prefect_deployment_id
            and r.start_time
            and r.state
            and r.state.is_final()
        ]
        lags = sorted(
            (r.start_time - r.expected_start_time).total_seconds()  # type: ignore[operator]
            for r in done
        )
        print(f"  {len(done)}/{RUNS} runs finished; lags so far: {lags}", file=sys.stderr)
        if len(done) >= RUNS:
            break
        await asyncio.sleep(10)  # progress cadence while waiting for the next minute
    return lags


def main() -> None:
    from config import get_settings
    from db.migrate import upgrade
    from scheduler.demo import WORK_POOL, _ensure_pool
    from scheduler.local_prefect import (
        TUNED_WORKER_ENV,
        local_prefect_server,
        prefect_env,
        process_worker,
    )
    from tests.support.databases import scratch_pg_database

    with (
        tempfile.TemporaryDirectory(prefix="lag-") as data_dir,
        scratch_pg_database("adsched_lag_app") as app_db,
        scratch_pg_database("adsched_lag_prefect") as prefect_db,
    ):
        os.environ["AD_SCHEDULER_DATA_DIR"] = data_dir
        os.environ["DATABASE_URL"] = app_db
        get_settings.cache_clear()
        upgrade(app_db)
        home = Path(data_dir) / "prefect-home"
        home.mkdir()
        with local_prefect_server(home, database_url=prefect_db) as api_url:
            print(f"Prefect server at {api_url}; starting a tuned worker", file=sys.stderr)
            os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home))
            env = prefect_env(home, extra={"PREFECT_API_URL": api_url, **TUNED_WORKER_ENV})
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                asyncio.run(_ensure_pool())
                with process_worker(WORK_POOL, env, home / "worker.log"):
                    lags = asyncio.run(_seed_and_measure())
    if len(lags) < 2:
        raise SystemExit(f"only {len(lags)} runs finished")
    p95 = statistics.quantiles(lags, n=20, method="inclusive")[18]
    print(
        json.dumps(
            {
                "lag_p50_s": round(statistics.median(lags), 3),
                "lag_p95_s": round(p95, 3),
                "runs": len(lags),
            }
        )
    )


async def _seed_and_measure() -> list[float]:
    from blocks.storage import default_storage
    from flows.sample_data import seed_sample_data

    tenant = uuid.uuid4()
    _brand, product, _ = await seed_sample_data(tenant, default_storage(), templates=RUNS + 1)
    return await _measure(product.id, tenant)


if __name__ == "__main__":
    main()
