"""A local Prefect server and worker as child processes (the demo, benchmarks and tests use it).

Everything binds to 127.0.0.1 and runs in its own process group, so stopping it stops exactly
what was started — never anything found by name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from config import PROJECT_ROOT
from config.settings import FORKSERVER_ENV

STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(
    home: Path, *, database_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a Prefect server or worker process with its own PREFECT_HOME."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    env.update(extra or {})
    return env


@contextmanager
def background_process(
    args: list[str],
    env: Mapping[str, str],
    log: Path | None,
    cwd: Path | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` in its own process group (in `cwd`, default the project), output to `log`
    (None: this process's stdout and stderr), with `pass_fds` open in it.

    Stopped on exit (`stop_process_group`).
    """
    with ExitStack() as files:
        out: IO[bytes] | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = files.enter_context(log.open("ab"))
        proc = subprocess.Popen(
            args,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            cwd=cwd or PROJECT_ROOT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
    try:
        yield proc
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (a worker turns it into a graceful stop); a second SIGTERM
    after half of `STOP_TIMEOUT_S` (Prefect's CLI then kills its worker or server itself: a
    worker has been seen to lose the first one), then SIGKILL."""
    for _ in range(2):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S / 2)
            return
        except subprocess.TimeoutExpired:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for the server's health endpoint; fail with the log's tail if it dies or stalls."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)  # polling a starting server
    raise RuntimeError(
        f"the Prefect server was not healthy after {STARTUP_TIMEOUT_S} s:\n"
        f"{log.read_text()[-4000:]}"
    )


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` (so a server can bind it)."""
    with socket.socket() as sock:
        # As the server itself binds (uvicorn sets it): connections of a server that just
        # stopped, left in TIME_WAIT, do not make the port busy; a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


#: The pool of a PostgreSQL-backed Prefect server (Prefect's default: 5, plus 10 overflow). At the
#: default a burst of 100 runs made the server open ~5 new PostgreSQL connections per run of ours
#: (each a fresh backend); at 30, none, and the burst took 1.21-1.28x the bare flow's in three
#: rounds against 1.30-1.60x in five (docs/scaling.md, session 13). PostgreSQL's default
#: `max_connections` (100) leaves room for it and the app's pools.
SERVER_POSTGRES_POOL_SIZE = 30

#: How the Prefect servers we start write what flow runs report through events, on either backend.
#:
#: Prefect's task-run recorder (which writes the task runs of flows' tasks, and their states, from
#: the events the runs send) writes each task-run state event in a transaction of its own by
#: default (`batch_size` 1), and a task run sends three (Pending, Running, Completed): ~75 ms of
#: the server's CPU per task run here. In batches of up to 100, flushed at least every second:
#: ~23 ms (docs/scaling.md, session 19, measured on the server's own CPU). A scheduled run of
#: ours has at least three task runs (selection, one per template, usage record) against a bare
#: flow's one, and in a burst the server's single process is what every run waits on. The event
#: persister (the `events` table, the UI's event feed) batches 20 events or 5 s by default; 200
#: or 1 s writes fewer, larger transactions under load and shows a quiet server's events sooner.
#:
#: What it costs: a task run's newest state reaches the API and the UI about a second (plus the
#: write) after it changed (the flow run's own states are not events and are never delayed).
#: Run one recorder per server database: deadlocks between replicas' batched upserts were
#: reported in PrefectHQ/prefect#21587. Prefect rounds the flush intervals down to whole
#: seconds: below 1 the flush loop would spin.
TUNED_SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}


def server_env(env: Mapping[str, str]) -> dict[str, str]:
    """What to add to a Prefect server's environment `env` (as `prefect_env` made it): every
    `TUNED_SERVER_ENV` setting and, for a server on PostgreSQL
    (`PREFECT_SERVER_DATABASE_CONNECTION_URL`), its pool size `SERVER_POSTGRES_POOL_SIZE`; each
    unless `env` already sets it, under its name or Prefect's older `PREFECT_API_SERVICES_…`
    alias (an operator's environment wins). Settings kept in a Prefect profile or `prefect.toml`
    rank below the environment in Prefect, so they do not: set those in the environment."""
    wanted = dict(TUNED_SERVER_ENV)
    if env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "").startswith("postgresql"):
        wanted["PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"] = str(SERVER_POSTGRES_POOL_SIZE)
    return {
        name: value
        for name, value in wanted.items()
        if name not in env
        and name.replace("PREFECT_SERVER_SERVICES_", "PREFECT_API_SERVICES_", 1) not in env
    }


@contextmanager
def local_prefect_server(
    home: Path,
    *,
    database_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    port: int | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1 (SQLite in `home`, or `database_url`).

    Its UI calls this server's own API (`PREFECT_UI_API_URL` is set from the port).

    Args:
        home: PREFECT_HOME of the server (its SQLite database and `server.log` go there).
        database_url: The server's database; None is SQLite in `home`.
        extra_env: More environment for the server process.
        port: The port; None picks a free one.
        on_start: Called with the server process once it is healthy (e.g. to print its pid).

    Yields the API URL; stops the server on exit.
    """
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # The UI asks the server for its API address (`/ui-settings`), which otherwise defaults to
    # port 4200 whatever `--port` says: a UI on any other port would call a server not there.
    env = prefect_env(home, database_url=database_url, extra={"PREFECT_UI_API_URL": api_url})
    env.update(server_env(env))
    env.update(extra_env or {})
    log = home / "server.log"
    args = [
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
    with background_process(args, env, log) as proc:
        wait_healthy(api_url, proc, log)
        if on_start is not None:
            on_start(proc)
        try:
            yield api_url
        finally:
            _send_pending_logs()


def _send_pending_logs(timeout_s: float = 10.0) -> None:
    """Send the logs this process's runs left in Prefect's API log queue, while the server is up.

    Prefect sends run logs in batches from a background worker that flushes at exit; for a
    server this process stops first, that flush failed and printed "Error logging to API: All
    connection attempts failed" after the benchmarks and the tests.
    """
    if "prefect.logging.handlers" not in sys.modules:  # no run logged anything here
        return
    from prefect.logging.handlers import APILogWorker

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running here: drain and wait (in one it returns a coroutine)
        APILogWorker.drain_all(timeout=timeout_s)


#: One CA certificate: the bundle of `TUNED_WORKER_ENV`'s workers (see there).
LOOPBACK_CA_BUNDLE = Path(__file__).with_name("loopback_ca.pem")


#: The worker's `--limit` (flow runs in flight at once, prefetched ones included) for `make
#: run`, `ad-scheduler up`, the demo and the Dockerfile's worker: a few per core. A burst is
#: CPU-bound (each flow-run process spends seconds of CPU starting), so more slots than that
#: only add memory (~130 MB each) and stretch every run; docs/scaling.md has the measurements.
DEFAULT_WORKER_LIMIT = 8


def worker_args(pool: str, limit: int | None = DEFAULT_WORKER_LIMIT) -> list[str]:
    """Command line of a process worker on `pool`, running at most `limit` flow runs at once
    (None: no limit, Prefect's default)."""
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    return args if limit is None else [*args, "--limit", str(limit)]


@dataclass(frozen=True)
class ForkServer:
    """A running fork server: its socket's path and its process."""

    path: str
    process: subprocess.Popen[bytes]


@dataclass(frozen=True)
class LocalWorker:
    """A running process worker and the fork server its flow runs start from (None: none)."""

    process: subprocess.Popen[bytes]
    forkserver: ForkServer | None


@contextmanager
def forkserver_process(
    env: Mapping[str, str],
    log: Path | None,
    cwd: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ForkServer]:
    """A fork server (`scheduler.forkserver`) with the environment `env`, output to `log`
    (None: this process's).

    The socket is bound and listening before the server starts (its descriptor is handed
    over), so a client that connects while the server still imports waits in the backlog
    rather than falling back. It lives in a private temporary folder (0700: only this user
    can connect; also short, as Unix socket paths must be), removed on exit; the server is
    stopped on exit and also stops by itself if this process ends (`--parent`). `extra_args`:
    more of its options (`python -m scheduler.forkserver --help`).
    """
    folder = tempfile.mkdtemp(prefix="adsched-fs-")
    path = os.path.join(folder, "forkserver.sock")
    try:
        with ExitStack() as stack:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(path)
                listener.listen(128)
                args = [
                    sys.executable,
                    "-m",
                    "scheduler.forkserver",
                    "--listen-fd",
                    str(listener.fileno()),
                    "--parent",
                    str(os.getpid()),
                    *extra_args,
                ]
                proc = stack.enter_context(
                    background_process(args, env, log, cwd, pass_fds=(listener.fileno(),))
                )
            # Closed here as soon as the server holds its copy: if the server dies, clients
            # are refused (and start their runs afresh) instead of queueing on a socket that
            # no one will ever accept from.
            yield ForkServer(path=path, process=proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def process_worker(
    pool: str,
    env: Mapping[str, str],
    log: Path | None,
    *,
    limit: int | None = DEFAULT_WORKER_LIMIT,
    cwd: Path | None = None,
    forkserver: bool = True,
) -> Iterator[LocalWorker]:
    """A process worker on `pool` (`worker_args`), its flow runs forked from a fork server.

    With `forkserver` (the default), a fork server starts first with the worker's environment
    (its log beside `log`: `forkserver.log`; with `log` None both print to this process's
    stdout and stderr), and the worker's environment names it
    (`AD_SCHEDULER_FORKSERVER`): a pool whose command is `engine_command()` then starts each
    flow run as a child of it, ~2 CPU-s cheaper than a fresh interpreter (docs/scaling.md).
    Without, or on a pool whose command is Prefect's, runs start fresh. On exit the worker
    stops first, then the fork server; runs in flight go on (each has its own session).
    """
    with ExitStack() as stack:
        server = None
        if forkserver:
            server_log = log.with_name("forkserver.log") if log is not None else None
            server = stack.enter_context(forkserver_process(env, server_log, cwd))
            env = {**env, FORKSERVER_ENV: server.path}
        proc = stack.enter_context(background_process(worker_args(pool, limit), env, log, cwd))
        yield LocalWorker(process=proc, forkserver=server)


#: Worker settings for sub-second schedule lag (docs/scaling.md says why): ask for due runs
#: every second, and take them 30 s ahead. A prefetched run's process starts at once and waits
#: for its slot (the server answers its early Running proposal with WAIT), so a run starts on
#: time when its process is ready within the prefetch. On Prefect 3.9 a process-pool flow run
#: is two interpreters (workspace supervisor, then the engine) that import Prefect and the flow
#: module: a few seconds on this 2-core machine when quiet, 20-50 s under heavy load; the
#: former 10 s prefetch let runs start 4-5 s late (issue 15, bench/lag.py).
#:
#: `PREFECT_CLIENT_MAX_RETRIES` (default 5, backing off 2, 4, … 32 s: about a minute): the
#: embedded SQLite server answers 503 ("database is locked") while many flow runs write state at
#: once. In a burst of 100 at `--limit 20` on a loaded 2-core machine the worker's submission of 9
#: runs still got 503 after five retries, and Prefect marked them Crashed without running them.
#: Seven retries wait up to ~4 minutes (the worker and its flow-run processes, which inherit it).
#:
#: `PREFECT_API_SSL_CERT_FILE` (`LOOPBACK_CA_BUNDLE`, for these workers only: every one talks to
#: a plain-http server on 127.0.0.1): Prefect 3.9 builds a verifying SSL context for every API
#: client it creates, loading that file or, unset, certifi's ~150 certificates: ~17 ms of CPU
#: each, uncontended. A flow-run process creates three as its run starts (the result store's,
#: the events worker's, the deployment concurrency lease's), on the cores the run's own start
#: needs: 60 ms off a scheduled run's duration here, measured in interleaved rounds of
#: bench/e2e.py (docs/scaling.md, session 9). Over http no certificate is checked, and one loads
#: in ~1 ms. (Upstream: PrefectHQ/prefect#19106, a context shared by every client.)
TUNED_WORKER_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_PREFETCH_SECONDS": "30",
    "PREFECT_CLIENT_MAX_RETRIES": "7",
    "PREFECT_API_SSL_CERT_FILE": str(LOOPBACK_CA_BUNDLE),
}
