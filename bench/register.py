"""Benchmark: registering jobs through the SDK vs bare `create_deployment` calls.

Registers 1,000 jobs through `AdScheduler.create` (validation, catalog checks, the job row, the
deployment, one transaction) and, in the same run and against the same server, makes 1,000 bare
`PrefectClient.create_deployment` calls with the same deployment payload (cron schedule with a
slug, tags, concurrency limit, parameter schema, work pool). The two are interleaved call by call
so that background load on the server (its scheduler creating runs for new deployments) falls
on both alike. Target: ratio sdk_s / bare_s ≤ 1.3.

Runs its own Prefect server (on a scratch PostgreSQL database, bound to 127.0.0.1) and a scratch
application database; both are removed at the end. Progress goes to stdout; the last line is
{"sdk_s", "bare_s", "ratio"}.

    .venv/bin/python bench/register.py [--jobs 1000] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def _bench(db_url: str, jobs: int, batch: int) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule

    from db.session import dispose_engines
    from flows import deployment_sync as dep
    from scheduler.sdk import AdScheduler
    from tests.support.bench_stack import seed_bench_catalog

    tenant_id = uuid.uuid4()
    product_id = await seed_bench_catalog(db_url, tenant_id)

    def spec(i: int) -> dict[str, object]:
        return {
            "name": f"bench job {i}",
            "product_id": str(product_id),
            "schedule": {"type": "recurring", "cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
            "max_runs": 8,
            "templates": {"mode": "unused", "count": 3},
        }

    sdk_s = bare_s = 0.0
    async with get_client() as client, AdScheduler(tenant_id, database_url=db_url) as ads:
        target = await dep.resolve_target(client)
        flow_id = await client.create_flow_from_name(dep.FLOW_NAME)
        schema = dep.job_parameter_schema()

        async def bare(i: int) -> None:
            await client.create_deployment(
                flow_id=flow_id,
                name=f"bare-{i}-{uuid.uuid4()}",
                entrypoint=dep.ENTRYPOINT,
                parameters={"job_id": str(uuid.uuid4())},
                parameter_openapi_schema=schema,
                enforce_parameter_schema=True,
                description=f"Bare deployment {i}",
                tags=["bench", f"tenant:{tenant_id}", f"product:{product_id}"],
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron="0 9 * * 1", timezone="Europe/Berlin"),
                        active=True,
                        slug=dep.SCHEDULE_SLUG,
                    )
                ],
                paused=False,
                concurrency_limit=1,
                concurrency_options=ConcurrencyOptions(
                    collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
                ),
                work_pool_name=target.work_pool_name,
                work_queue_name=target.work_queue_name,
                pull_steps=target.pull_steps,
                job_variables=target.job_variables,
            )

        # Warm-up (connections, caches, first-time server paths), not timed.
        for i in range(5):
            await bare(-1 - i)
            await ads.create(spec(-1 - i))

        # One bare call and one SDK registration at a time, alternating which goes first, so
        # that the server's background work (its scheduler creating runs for each new
        # deployment) falls on both alike.
        for i in range(jobs):
            for kind in ("bare", "sdk") if i % 2 == 0 else ("sdk", "bare"):
                start = time.perf_counter()
                if kind == "bare":
                    await bare(i)
                    bare_s += time.perf_counter() - start
                else:
                    await ads.create(spec(i))
                    sdk_s += time.perf_counter() - start
            if (i + 1) % batch == 0 or i + 1 == jobs:
                print(
                    f"{i + 1}/{jobs}  sdk {sdk_s:.1f} s  bare {bare_s:.1f} s  "
                    f"ratio {sdk_s / bare_s:.2f}",
                    flush=True,
                )
        registered = len(await ads.list_jobs())
        assert registered == jobs + 5, f"{registered} jobs registered, expected {jobs + 5}"
    await dispose_engines()
    return {"sdk_s": round(sdk_s, 2), "bare_s": round(bare_s, 2), "ratio": round(sdk_s / bare_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    from tests.support.bench_stack import bench_stack

    with bench_stack() as stack:
        print(
            f"server {stack.api_url}; app database {stack.db_name}; registering {args.jobs} + "
            f"{args.jobs} deployments",
            flush=True,
        )
        result = asyncio.run(_bench(stack.db_url, args.jobs, args.batch))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
