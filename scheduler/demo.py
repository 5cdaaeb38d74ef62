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
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from config import PROJECT_ROOT, get_settings

console = Console()
DEMO_TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000de")
WORK_POOL = "ad-scheduler-process"
DEMO_TIMEOUT_S = 300


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(api_url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        # Tuned for start-up lag: poll every second, pick up runs due in the next 10 s.
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="10",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="2",
        AD_SCHEDULER_DATA_DIR=str(get_settings().data_dir),
    )
    return env


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # The worker turns SIGTERM into a graceful stop; a second signal kills it.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_healthy(api_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the Prefect server exited; see {log}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the Prefect server did not become healthy; see {log}")


def run_demo() -> None:
    """Run the demo end to end (blocking)."""
    settings = get_settings()
    data = settings.data_dir
    home = data / "prefect-home"
    logs = data / "logs"
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _env(api_url, home)
    os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME")})

    from db.migrate import upgrade
    from db.session import resolve_database_url

    url = asyncio.run(resolve_database_url())
    console.print(f"[bold]1/6[/] migrating the app database: {url.render_as_string(True)}")
    upgrade(url)

    console.print(f"[bold]2/6[/] starting a local Prefect server on {api_url} (logs in {logs})")
    server_log = logs / "prefect-server.log"
    server_args = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with _process(server_args, env, server_log) as server:
        _wait_healthy(api_url, server, server_log)
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_HOME: str(home)}):
            asyncio.run(_ensure_pool())
            console.print(f"[bold]3/6[/] starting a process worker on pool {WORK_POOL!r}")
            worker_args = [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
            ]
            with _process(worker_args, env, logs / "prefect-worker.log"):
                asyncio.run(_demo(api_url))
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


async def _demo(api_url: str) -> None:
    from blocks.storage import default_storage
    from db.models import AdRun, GeneratedAd, ScheduledJob, ScheduledJobRun
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
    while True:
        async with session_scope() as session:
            row = await session.get(ScheduledJob, job.id, populate_existing=True)
            runs = list(
                (
                    await session.scalars(
                        sa.select(ScheduledJobRun)
                        .where(ScheduledJobRun.scheduled_job_id == job.id)
                        .order_by(ScheduledJobRun.created_at)
                    )
                ).all()
            )
        assert row is not None
        status = ", ".join(f"{r.status}" for r in runs) or "waiting for the first minute"
        line = f"job {row.status}: runs {row.runs_completed}/{row.max_runs} done ({status})"
        if line != last:
            console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] {line}")
            last = line
        if row.status == "completed" or (row.runs_completed or 0) >= 2:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the demo did not finish in {DEMO_TIMEOUT_S} s; see data/logs")
        await asyncio.sleep(1)  # progress display cadence

    console.print("[bold]6/6[/] run history")
    table = Table("flow run", "trigger", "status", "templates", "error")
    async with session_scope() as session:
        runs = list(
            (
                await session.scalars(
                    sa.select(ScheduledJobRun)
                    .where(ScheduledJobRun.scheduled_job_id == job.id)
                    .order_by(ScheduledJobRun.created_at)
                )
            ).all()
        )
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
