"""A real Prefect server for tests and benchmarks, on PostgreSQL, bound to 127.0.0.1.

`prefect_test_harness` runs its server on SQLite, which answers 503 "database is locked" under
many concurrent task runs; this starts `prefect server start` on a scratch PostgreSQL database
instead, with its own PREFECT_HOME, and stops it (and only it) on exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from config.settings import PROJECT_ROOT
from flows.deployment_sync import DEFAULT_WORK_POOL
from scheduler.local_prefect import free_port, local_prefect_server
from tests.support.databases import scratch_pg_database

#: The server's scheduler and concurrency-slot services tick fast so tests do not wait on them.
FAST_SERVICES = {
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
}


@contextmanager
def running_prefect_server(database_url: str | None = None, *, ui: bool = False) -> Iterator[str]:
    """Start a Prefect server; yields its API URL. Stops it on exit.

    Args:
        database_url: The server's database; None gives a scratch PostgreSQL database.
        ui: Serve the Prefect UI too (the browser tests open it).
    """
    if database_url is None:
        with (
            scratch_pg_database("adsched_prefect") as url,
            running_prefect_server(url, ui=ui) as api,
        ):
            yield api
        return
    env = {**FAST_SERVICES, "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false"}
    with tempfile.TemporaryDirectory(prefix="prefect-home-") as home:
        with local_prefect_server(Path(home), database_url=database_url, extra_env=env) as api_url:
            yield api_url


def prefect_cli(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `prefect <args>` in the project folder, as CI and the README do."""
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def deploy_project(prefect_api: str, *, timeout: float = 300) -> dict[str, str]:
    """Create the process pool and `prefect --no-prompt deploy --all` against `prefect_api`, as
    the README says; returns the environment used. Fails the test with the CLI's output."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_CLI_PROMPT": "false"}
    pool = prefect_cli(
        "work-pool",
        "create",
        DEFAULT_WORK_POOL,
        "--type",
        "process",
        "--overwrite",
        env=env,
        timeout=timeout,
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deployed = prefect_cli("--no-prompt", "deploy", "--all", env=env, timeout=timeout)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    return env


__all__ = ["deploy_project", "free_port", "prefect_cli", "running_prefect_server"]
