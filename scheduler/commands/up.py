"""`ad-scheduler up`: the local Prefect server (with its UI), a worker and the reconciler.

Everything binds to 127.0.0.1 and runs until interrupted: Ctrl-C (SIGINT) or SIGTERM stops
exactly the four processes it started (each in its own process group), in reverse order, and
nothing else. The UI calls the API on the same `--port` (`PREFECT_UI_API_URL` is derived from
it), so any port works, not only 4200.

By default the server keeps its state in `<data dir>/prefect-home` — the same place `make run`
uses — so the demo's job, runs and artifacts are there to look at.

- the app database is migrated first (as `make run` does), so the flows find their tables;
- the worker: a process worker on the work pool job deployments use (created if missing), and
  the fork server its flow runs are forked from (`scheduler.local_prefect.process_worker`);
- the reconciler: `reconcile-job-runs` served on a schedule (`--reconcile-every`, seconds), which
  heals the run history from the Prefect API (see flows/reconcile.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from config import get_settings
from scheduler.commands.common import StopSignal
from scheduler.local_prefect import (
    TUNED_WORKER_ENV,
    background_process,
    local_prefect_server,
    port_is_free,
    prefect_env,
    process_worker,
)

#: The deployment name the reconciler is served under.
RECONCILER_DEPLOYMENT = "ad-scheduler-up"
DEFAULT_PORT = 4200
DEFAULT_RECONCILE_EVERY_S = 300


class UpProblem(ValueError):
    """A reason `up` cannot start (the message names the option and what is allowed)."""


def reconciler_args(every_seconds: int) -> list[str]:
    """Command line of the process that serves `reconcile-job-runs` every `every_seconds`."""
    return [sys.executable, "-m", "scheduler.commands.up", "--serve-reconciler", str(every_seconds)]


def serve_reconciler(every_seconds: int) -> None:
    """Serve `reconcile-job-runs` on an interval schedule (blocks until the process is stopped)."""
    from flows.reconcile import reconcile_job_runs

    reconcile_job_runs.serve(name=RECONCILER_DEPLOYMENT, interval=every_seconds)


async def _ensure_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client

    from flows.deployment_sync import ensure_process_pool

    async with get_client() as client:
        await ensure_process_pool(client, pool)


@dataclass
class Stack:
    """What `running_stack` started."""

    api_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ui_url(self) -> str:
        """The UI's address (the server's root)."""
        return self.api_url.removesuffix("/api")


@contextmanager
def running_stack(home: Path, port: int, pool: str, reconcile_every: int) -> Iterator[Stack]:
    """Start the server, the worker and the reconciler; stop them (in reverse order) on exit.

    Args:
        home: PREFECT_HOME of the server (its SQLite database and the logs).
        port: The server's port on 127.0.0.1 (1..65535, free).
        pool: The process work pool the worker polls (created if missing).
        reconcile_every: Seconds between reconciler runs (60..86400).

    Yields:
        The API URL and the four processes (`server`, `forkserver`, `worker`, `reconciler`).

    Raises:
        UpProblem: The port is taken or an option is out of range (nothing started).
        RuntimeError: The server did not become healthy (its log's tail is in the message).
    """
    import asyncio

    if not 1 <= port <= 65535:
        raise UpProblem(f"--port {port} is out of range; allowed: 1..65535")
    if not 60 <= reconcile_every <= 86_400:
        raise UpProblem(
            f"--reconcile-every {reconcile_every} is out of range; allowed: 60..86400 seconds"
        )
    if not port_is_free(port):
        raise UpProblem(
            f"--port {port}: something already listens on 127.0.0.1:{port}; "
            "allowed: a free port (e.g. --port 4300), or stop what uses it"
        )
    home.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as stack:
        api_url = stack.enter_context(
            local_prefect_server(
                home, port=port, on_start=lambda proc: processes.__setitem__("server", proc)
            )
        )
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            asyncio.run(_ensure_pool(pool))
            # The flows the worker runs need the app's tables (idempotent; a connector block
            # named by DATABASE_URL resolves through this server).
            from db.migrate import upgrade
            from db.session import resolve_database_url

            upgrade(asyncio.run(resolve_database_url()))
        env = prefect_env(
            home,
            extra={
                "PREFECT_API_URL": api_url,
                "AD_SCHEDULER_DATA_DIR": str(get_settings().data_dir),
                **TUNED_WORKER_ENV,
            },
        )
        worker = stack.enter_context(process_worker(pool, env, home / "worker.log"))
        processes["worker"] = worker.process
        if worker.forkserver is not None:
            processes["forkserver"] = worker.forkserver.process
        processes["reconciler"] = stack.enter_context(
            background_process(reconciler_args(reconcile_every), env, home / "reconciler.log")
        )
        yield Stack(api_url=api_url, processes=processes)


def up_command(
    port: Annotated[
        int, typer.Option(help="Port of the server and its UI on 127.0.0.1.")
    ] = DEFAULT_PORT,
    pool: Annotated[
        str, typer.Option(help="Process work pool the worker polls (created if missing).")
    ] = "",
    reconcile_every: Annotated[
        int, typer.Option(help="Seconds between reconciler runs (60..86400).")
    ] = DEFAULT_RECONCILE_EVERY_S,
    home: Annotated[
        Path | None,
        typer.Option(help="PREFECT_HOME of the server (default: <data dir>/prefect-home)."),
    ] = None,
) -> None:
    """Start the local Prefect server + UI, a worker and the reconciler; Ctrl-C stops them."""
    from config.settings import DEFAULT_WORK_POOL

    pool = pool or get_settings().work_pool or DEFAULT_WORK_POOL
    home = home or get_settings().data_dir / "prefect-home"
    stop = StopSignal()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running_stack(home, port, pool, reconcile_every) as started:
            pids = {name: proc.pid for name, proc in started.processes.items()}
            typer.echo(f"Prefect UI   {started.ui_url}   (API {started.api_url})")
            typer.echo(
                f"server pid {pids['server']}, worker pid {pids['worker']} (pool {pool}; "
                f"fork server pid {pids['forkserver']}), reconciler pid {pids['reconciler']} "
                f"(every {reconcile_every} s); logs in {home}"
            )
            typer.echo(f"Use it from another shell: export PREFECT_API_URL={started.api_url}")
            typer.echo(
                f"Job board: {started.ui_url}/artifacts (key job-board-<tenant>). "
                "Ctrl-C stops them all."
            )
            _supervise(stop, started, home)
    except UpProblem as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("stopped the reconciler, the worker, its fork server and the Prefect server")


def _supervise(stop: StopSignal, started: Stack, home: Path) -> None:
    """Wait for a signal; a child that dies on its own ends `up` too (and says which)."""
    while not stop.event.wait(timeout=1.0):  # waits for the signal; wakes to check children
        for name, proc in started.processes.items():
            if proc.poll() is not None:
                typer.echo(
                    f"the {name} (pid {proc.pid}) exited on its own; stopping the rest "
                    f"(see {home / (name + '.log')})",
                    err=True,
                )
                raise typer.Exit(1)
    typer.echo(f"{stop.signal_name}: stopping")


def register(app: typer.Typer) -> None:
    """Mount `up` on the `ad-scheduler` app."""
    app.command("up")(up_command)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-reconciler":
        serve_reconciler(int(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m scheduler.commands.up --serve-reconciler SECONDS")
