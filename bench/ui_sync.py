"""Benchmark: how fast (and how surely) a change made in the Prefect UI reaches `scheduled_jobs`.

Registers `--jobs` jobs through the SDK, runs the UI watcher (`flows.ui_sync.watch_ui_changes`,
a pass every `--interval` seconds, as deployed), then makes `--actions` UI calls on random jobs —
the HTTP calls the Prefect UI makes: the pause toggle (PATCH paused), un-pause, the schedule
toggle (PATCH schedules/{id} active), a cron edit, a quick run (POST create_flow_run) — and times
each from the call to the moment the job's row (or run row) shows it. Also times a watcher pass
over all jobs with nothing to do (the steady-state cost).

Runs its own Prefect server (scratch PostgreSQL, 127.0.0.1) and scratch application database;
both are removed at the end. The last line is one JSON object:
{"jobs", "interval_s", "actions", "missed", "latency_p50_s", "latency_p95_s", "latency_max_s",
"idle_pass_p50_ms"}.

    .venv/bin/python bench/ui_sync.py [--jobs 200] [--actions 40] [--interval 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: A change not seen within this long counts as missed.
DEADLINE_S = 60.0


async def _bench(db_url: str, api_url: str, jobs: int, actions: int, interval: float) -> dict:
    import httpx
    import sqlalchemy as sa
    from prefect.client.orchestration import get_client

    from db.models import ScheduledJob, ScheduledJobRun
    from db.session import dispose_engines, session_scope
    from flows.ui_sync import sync_ui_changes, watch_ui_changes
    from scheduler.sdk import AdScheduler
    from tests.support.bench_stack import seed_bench_catalog

    tenant_id = uuid.uuid4()
    product_id = await seed_bench_catalog(db_url, tenant_id)
    async with AdScheduler(tenant_id, database_url=db_url) as ads:
        created = [
            await ads.create(
                {
                    "name": f"bench job {i}",
                    "product_id": str(product_id),
                    "schedule": {"type": "recurring", "cron": "0 9 * * 1", "timezone": "UTC"},
                    "templates": {"mode": "unused", "count": 1},
                }
            )
            for i in range(jobs)
        ]
    print(f"{jobs} jobs registered", flush=True)

    idle_ms = []
    async with get_client() as client:
        for _ in range(5):
            start = time.perf_counter()
            report = await sync_ui_changes(database_url=db_url, client=client)
            idle_ms.append((time.perf_counter() - start) * 1000)
            assert report.jobs_changed == 0 and report.jobs_checked == jobs, report
    print(f"idle pass over {jobs} jobs: {statistics.median(idle_ms):.0f} ms", flush=True)

    async def row(job_id: uuid.UUID) -> ScheduledJob:
        async with session_scope(db_url) as session:
            found = await session.get(ScheduledJob, job_id)
            assert found is not None
            return found

    async def has_run(flow_run_id: uuid.UUID) -> bool:
        async with session_scope(db_url) as session:
            return bool(
                await session.scalar(
                    sa.select(sa.func.count()).where(ScheduledJobRun.flow_run_id == flow_run_id)
                )
            )

    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch_ui_changes(interval=interval, database_url=db_url, stop=stop)
    )
    latencies: list[float] = []
    missed = 0
    rng = random.Random(7)
    crons = ["15 8 * * *", "0 10 * * 1-5", "30 6 * * 0", "0 9 * * 1"]
    try:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as ui:
            for i in range(actions):
                job = rng.choice(created)
                current = await row(job.id)
                dep_id = job.prefect_deployment_id
                kind = ("pause", "schedule", "cron", "quick_run")[i % 4]
                check: Any
                if kind == "pause":
                    paused = current.status == "paused"
                    await ui.patch(f"/deployments/{dep_id}", json={"paused": not paused})
                    want = "active" if paused else "paused"

                    async def check(job_id: uuid.UUID = job.id, want: str = want) -> bool:
                        return (await row(job_id)).status == want
                elif kind == "schedule":
                    schedules = (await ui.get(f"/deployments/{dep_id}/schedules")).json()
                    active = schedules[0]["active"]
                    await ui.patch(
                        f"/deployments/{dep_id}/schedules/{schedules[0]['id']}",
                        json={"active": not active},
                    )
                    deployment = (await ui.get(f"/deployments/{dep_id}")).json()
                    want = "active" if (not active and not deployment["paused"]) else "paused"

                    async def check(job_id: uuid.UUID = job.id, want: str = want) -> bool:
                        return (await row(job_id)).status == want
                elif kind == "cron":
                    new = rng.choice([c for c in crons if c != current.cron_expression])
                    schedules = (await ui.get(f"/deployments/{dep_id}/schedules")).json()
                    await ui.patch(
                        f"/deployments/{dep_id}/schedules/{schedules[0]['id']}",
                        json={"schedule": {"cron": new, "timezone": "UTC"}},
                    )

                    async def check(job_id: uuid.UUID = job.id, want: str = new) -> bool:
                        return (await row(job_id)).cron_expression == want
                else:
                    run = (
                        await ui.post(
                            f"/deployments/{dep_id}/create_flow_run",
                            json={"state": {"type": "SCHEDULED", "message": "Run from the UI"}},
                        )
                    ).json()

                    run_id = uuid.UUID(run["id"])

                    async def check(run_id: uuid.UUID = run_id) -> bool:
                        return await has_run(run_id)

                start = time.monotonic()
                while not await check():
                    if time.monotonic() - start > DEADLINE_S:
                        missed += 1
                        print(f"missed: {kind} on {job.name}", flush=True)
                        break
                    await asyncio.sleep(0.05)  # polling the database for the change
                else:
                    latencies.append(time.monotonic() - start)
                    print(f"{i + 1}/{actions} {kind}: {latencies[-1]:.2f} s", flush=True)
    finally:
        stop.set()
        await watcher
    await dispose_engines()
    ordered = sorted(latencies)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else None
    return {
        "jobs": jobs,
        "interval_s": interval,
        "actions": actions,
        "missed": missed,
        "latency_p50_s": round(statistics.median(ordered), 2) if ordered else None,
        "latency_p95_s": round(p95, 2) if p95 is not None else None,
        "latency_max_s": round(ordered[-1], 2) if ordered else None,
        "idle_pass_p50_ms": round(statistics.median(idle_ms), 1),
        "loadavg": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--actions", type=int, default=40)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()

    from tests.support.bench_stack import bench_stack

    with bench_stack() as stack:
        result = asyncio.run(
            _bench(stack.db_url, stack.api_url, args.jobs, args.actions, args.interval)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
