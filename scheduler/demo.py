"""`ad-scheduler demo` (what `make run` runs): the whole product on a machine with no services.

It starts a local Prefect server (SQLite in `<data dir>/prefect-home`, 127.0.0.1) and a process
worker, migrates the app database (the embedded SQLite file, or `DATABASE_URL`), seeds a sample
brand, product and templates drawn by code under the CLI's tenant (`AD_SCHEDULER_TENANT_ID`),
registers through the SDK a job that fires every minute with `max_runs=2`, shows progress until
both runs finish, prints the run history and the generated ads, and stops the processes it
started.

The job, its runs, its artifacts and the job board stay (the job `completed`): `ad-scheduler up`
serves the same Prefect home, so the demo ends by saying where to look at them in the UI and with
a ready-to-run `jobs create` line for the same product.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from config import get_settings
from flows.job_board import board_key
from scheduler.commands.up import DEFAULT_PORT as UP_DEFAULT_PORT
from scheduler.local_prefect import (
    TUNED_WORKER_ENV,
    local_prefect_server,
    prefect_env,
    process_worker,
)

console = Console()
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
        console.print(
            f"      Prefect API at {api_url}; its UI at {api_url.removesuffix('/api')} "
            "while the demo runs"
        )
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
            with process_worker(WORK_POOL, env, home / "worker.log"):
                made = asyncio.run(_demo())
    console.print("stopped the worker and the Prefect server (the job and its runs are kept)")
    _print_what_to_do_next(made)


async def _ensure_pool() -> None:
    from prefect.client.orchestration import get_client

    from flows.deployment_sync import ensure_process_pool

    async with get_client() as client:
        await ensure_process_pool(client, WORK_POOL)


@dataclass
class DemoOutcome:
    """What the demo made and kept."""

    tenant_id: uuid.UUID
    product_id: uuid.UUID
    product_name: str
    job_id: uuid.UUID
    job_name: str
    job_status: str
    deployment_id: uuid.UUID | None


def _print_what_to_do_next(made: DemoOutcome) -> None:
    ui = f"http://127.0.0.1:{UP_DEFAULT_PORT}"
    lines = [
        "",
        f"[bold]Product[/]  {made.product_name}  id={made.product_id}",
        f"[bold]Job[/]      {made.job_name}  id={made.job_id}  status={made.job_status} "
        f"(tenant {made.tenant_id})",
        f"[bold]Prefect UI[/]  run `ad-scheduler up`, then open {ui}",
    ]
    if made.deployment_id is not None:
        lines.append(f"  the job:    {ui}/deployments/deployment/{made.deployment_id}")
    lines += [
        f"  job board:  {ui}/artifacts/key/{board_key(made.tenant_id)}",
        "[bold]Make your own job[/] for this product (Mondays 09:00 Berlin, 8 runs):",
        f"  ad-scheduler jobs create --name my-weekly-ads --product {made.product_id} "
        "--cron '0 9 * * 1' --tz Europe/Berlin --max-runs 8 --unused 3 --variations 3",
    ]
    for line in lines:
        # Unwrapped: addresses and the command must stay copyable whatever the terminal width.
        console.print(line, soft_wrap=True, highlight=False)


async def _demo() -> DemoOutcome:
    from blocks.storage import default_storage
    from db.queries.ads import ads_of_job
    from db.session import dispose_engines, session_scope
    from flows.job_board import refresh_job_board_quietly
    from flows.sample_data import seed_sample_data
    from scheduler.sdk import AdScheduler

    storage = default_storage()
    # The CLI's tenant: what the demo makes is what `ad-scheduler jobs list` shows afterwards.
    tenant_id = uuid.UUID(get_settings().tenant_id)
    _brand, product, report = await seed_sample_data(tenant_id, storage, templates=8)
    console.print(
        f"[bold]4/6[/] sample brand, product {product.name!r} and "
        f"{len(report.added) + report.unchanged} templates in {storage.local_path('.')}"
    )
    name = f"demo-every-minute-{uuid.uuid4().hex[:6]}"
    async with AdScheduler(tenant_id) as ads:
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
    reader = AdScheduler(tenant_id)
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
        ads_made = await ads_of_job(session, job.id)
    for r in runs:
        table.add_row(
            r.flow_run_name or str(r.flow_run_id),
            r.trigger or "",
            r.status or "",
            "\n".join(r.templates_used or []),
            r.error_message or "",  # the whole reason, never a cut one
        )
    console.print(table)
    console.print(f"{len(ads_made)} ads generated:")
    for ad in ads_made:
        console.print(f"  {ad.template_storage_name} -> {storage.local_path(ad.storage_path)}")
    # The runs' hooks refreshed the board already; once more so it shows the job completed.
    await refresh_job_board_quietly(tenant_id)
    final = await reader.get(job.id)
    await dispose_engines()
    return DemoOutcome(
        tenant_id=tenant_id,
        product_id=product.id,
        product_name=product.name,
        job_id=job.id,
        job_name=job.name,
        job_status=final.status or "",
        deployment_id=final.prefect_deployment_id,
    )
