"""`ad-scheduler worker`: a Prefect process worker with the fork server its flow runs start from.

What a worker host runs (the image's command, a service unit): `prefect worker start --type
process --pool <pool> --limit <n>` beside a fork server (`scheduler.local_prefect.process_worker`).
The pool's command (`flows.deployment_sync.engine_command`) forks each run's engine from that
server instead of starting a fresh interpreter: ~2 CPU-s less per run (docs/scaling.md). A pool
without that command (created by `prefect work-pool create` with no `command`) still works; its
runs start fresh and the fork server idles. The pool is created with our command when missing.

The worker's and the fork server's output go to this command's stdout and stderr (a service
manager's journal, `docker logs`). SIGTERM or SIGINT stops the worker (Prefect's graceful stop),
then the fork server; runs in flight go on in their own sessions and end on their own terms, as
under a bare `prefect worker start`. A fork server that dies leaves the worker running (its runs
then start fresh); a worker that dies ends the command with its exit code.
"""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from config import get_settings
from scheduler.commands.common import StopSignal


def worker_command(
    pool: Annotated[
        str, typer.Option(help="Process work pool to poll (created with our command if missing).")
    ] = "",
    limit: Annotated[
        int | None,
        typer.Option(help="Flow runs in flight at once (default: about 4 per core, 8 here)."),
    ] = None,
    forkserver: Annotated[
        bool,
        typer.Option(help="Fork flow runs from a warm fork server (--no-forkserver: fresh)."),
    ] = True,
) -> None:
    """Run a process worker (and its fork server) in the foreground; Ctrl-C stops it."""
    import asyncio
    import os

    from config.settings import DEFAULT_WORK_POOL
    from scheduler.local_prefect import DEFAULT_WORKER_LIMIT, process_worker

    if limit is not None and limit < 1:
        typer.echo(f"error: --limit {limit} is out of range; allowed: 1 or more", err=True)
        raise typer.Exit(2)
    pool = pool or get_settings().work_pool or DEFAULT_WORK_POOL
    asyncio.run(_ensure_pool(pool))
    stop = StopSignal()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with process_worker(
            pool, os.environ, None, limit=limit or DEFAULT_WORKER_LIMIT, forkserver=forkserver
        ) as worker:
            server = worker.forkserver
            typer.echo(
                f"worker pid {worker.process.pid} on pool {pool!r}"
                + (f", fork server pid {server.process.pid}" if server else ", no fork server"),
                err=True,
            )
            warned = False
            # Wakes each second to check the children; a signal sets the event at once.
            while not stop.event.wait(timeout=1.0):
                code = worker.process.poll()
                if code is not None:
                    typer.echo(f"the worker exited on its own (status {code})", err=True)
                    raise typer.Exit(code or 1)
                if server is not None and not warned and server.process.poll() is not None:
                    typer.echo(
                        f"the fork server exited (status {server.process.returncode}); "
                        "flow runs now start as fresh interpreters",
                        err=True,
                    )
                    warned = True
            typer.echo(f"{stop.signal_name}: stopping the worker, then the fork server", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _ensure_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client

    from flows.deployment_sync import ensure_process_pool

    async with get_client() as client:
        await ensure_process_pool(client, pool)


def register(app: typer.Typer) -> None:
    """Mount `worker` on the `ad-scheduler` app."""
    app.command("worker")(worker_command)
