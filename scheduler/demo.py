"""`ad-scheduler demo` (what `make run` runs): the whole product on a machine with no services.

It starts a local Prefect server (SQLite, 127.0.0.1) and a process worker, migrates the app
database (the embedded SQLite file, or `DATABASE_URL`), seeds a sample brand, product and
templates drawn by code, registers through the SDK a job that fires every minute with
`max_runs=2`, shows progress until both runs finish, prints the run history and the generated
ads, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from config import get_settings
from scheduler.local_prefect import (
    TUNED_WORKER_ENV,
    background_process,
    local_prefect_server,
    prefect_env,
    worker_args,
)

console = Console()
DEMO_TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000de")
WORK_POOL = "ad-scheduler-process"
DEMO_TIMEOUT_S = 300


def run_demo() -> None:
    """Run the demo end to end (blocking)."""
    settings = get_settings()
    data = settings.data_dir
    home = data / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)

    from db.migrate import upgrade
    from db.session import resolve_database_url

    url = asyncio.run(resolve_database_url())
    console.print(f"[bold]1/6[/] migrating the app database: {url.render_as_string(True)}")
    upgrade(url)

    console.print(f"[bold]2/6[/] starting a local Prefect server (logs in {home})")
    server_env = {"PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2"}
    with local_prefect_server(home, extra_env=server_env) as api_url:
        console.print(f"      Prefect API at {api_url}")
        os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home))
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_HOME: str(home)}):
            asyncio.run(_ensure_pool())
            console.print(f"[bold]3/6[/] starting a process worker on pool {WORK_POOL!r}")
            env = prefect_env(
                home,
                extra={
                    "PREFECT_API_URL": api_url,
                    "AD_SCHEDULER_DATA_DIR": str(data),
                    **TUNED_WORKER_ENV,
                },
            )
            with background_process(worker_args(WORK_POOL), env, home / "worker.log"):
                asyncio.run(_demo())
    console.print("stopped the worker and the Prefect server")


async def _ensure_pool() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=WORK_POOL,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:
            pass


async def _demo() -> None:
    from blocks.storage import default_storage
    from db.models import AdRun, GeneratedAd
    from db.session import dispose_engines, session_scope
    from flows.sample_data import seed_sample_data
    from scheduler.sdk import AdScheduler

    storage = default_storage()
    _brand, product, report = await seed_sample_data(DEMO_TENANT, storage, templates=8)
    console.print(
        f"[bold]4/6[/] sample brand, product {product.name!r} and "
        f"{len(report.added) + report.unchanged} templates in {storage.local_path('.')}"
    )
    name = f"demo-every-minute-{uuid.uuid4().hex[:6]}"
    async with AdScheduler(DEMO_TENANT) as ads:
        job = await ads.create(
            {
                "name": name,
                "product_id": str(product.id),
                "description": "make run: every minute, 2 runs, 3 unused templates x 2 ads",
                "schedule": {"type": "recurring", "cron": "* * * * *", "timezone": "UTC"},
                "max_runs": 2,
                "templates": {"mode": "unused", "count": 3},
                "ad": {"variations": 2, "content_source": "hooks", "color_mode": "brand"},
            }
        )
    console.print(
        f"[bold]5/6[/] registered job {job.name!r} (deployment {job.prefect_deployment_id}); "
        "it fires at the start of every minute, twice"
    )
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    last = ""
    # The SDK is how people read a job and its history (database reads: no Prefect client).
    reader = AdScheduler(DEMO_TENANT)
    while True:
        row = await reader.get(job.id)
        runs = list(reversed(await reader.runs(job.id)))
        status = ", ".join(f"{r.status}" for r in runs) or "waiting for the first minute"
        line = f"job {row.status}: runs {row.runs_completed}/{row.max_runs} done ({status})"
        if line != last:
            console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] {line}")
            last = line
        if row.status == "completed" or (row.runs_completed or 0) >= 2:
            break
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the demo did not finish in {DEMO_TIMEOUT_S} s; see the logs in data/prefect-home"
            )
        await asyncio.sleep(1)  # progress display cadence

    console.print("[bold]6/6[/] run history")
    table = Table("flow run", "trigger", "status", "templates", "error")
    runs = list(reversed(await reader.runs(job.id)))
    async with session_scope() as session:
        ads_made = (
            await session.execute(
                sa.select(AdRun.template_storage_name, GeneratedAd.storage_path)
                .join(GeneratedAd, GeneratedAd.ad_run_id == AdRun.id)
                .where(AdRun.scheduled_job_id == job.id)
                .order_by(AdRun.created_at, GeneratedAd.variation_index)
            )
        ).all()
    for r in runs:
        table.add_row(
            r.flow_run_name or str(r.flow_run_id),
            r.trigger or "",
            r.status or "",
            "\n".join(r.templates_used or []),
            (r.error_message or "")[:60],
        )
    console.print(table)
    console.print(f"{len(ads_made)} ads generated:")
    for template, path in ads_made:
        console.print(f"  {template} -> {storage.local_path(path)}")
    async with AdScheduler(DEMO_TENANT) as ads:
        await ads.delete(job.id)
    await dispose_engines()
