"""A real Prefect server for tests and benchmarks, on PostgreSQL, bound to 127.0.0.1.

`prefect_test_harness` runs its server on SQLite, which answers 503 "database is locked" under
many concurrent task runs; this starts `prefect server start` on a scratch PostgreSQL database
instead, with its own PREFECT_HOME, and stops it (and only it) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.databases import pg_url, scratch_pg_database

STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(home: str, database_url: str | None) -> dict[str, str]:
    """Environment for a Prefect server or client process of this test server."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.3",
        # The server's scheduler and late-run services tick fast so tests do not wait on them.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="1",
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
    )
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    env.pop("PREFECT_API_URL", None)
    return env


@contextmanager
def running_prefect_server(database_url: str | None = None) -> Iterator[str]:
    """Start a Prefect server; yields its API URL. Stops it on exit.

    Args:
        database_url: The server's database; None gives a scratch PostgreSQL database.
    """
    if database_url is None:
        with scratch_pg_database("adsched_prefect") as url:
            with running_prefect_server(url) as api_url:
                yield api_url
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="prefect-home-") as home:
        log = Path(home) / "server.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=server_env(home, database_url),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            api_url = f"http://127.0.0.1:{port}/api"
            try:
                _wait_healthy(api_url, proc, log)
                yield api_url
            finally:
                _stop(proc)


def _wait_healthy(api_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)  # polling a starting server; not a stand-in for synchronisation
    _stop(proc)
    raise RuntimeError(
        f"Prefect server not healthy after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-4000:]}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


__all__ = ["free_port", "pg_url", "running_prefect_server", "server_env"]
