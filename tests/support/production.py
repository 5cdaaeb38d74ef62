"""The production path for tests: a real process worker, in its own process, running jobs.

`production_worker` (session-scoped) gives one process worker on its own work pool of the
session's Prefect server (`prefect_api`, on PostgreSQL). The worker's environment is what a
production worker host has and nothing the test process set up in-process:

- `DATABASE_URL` is the *name* of a saved `AsyncSqlAlchemyConnector` block pointing at a
  migrated scratch PostgreSQL database of its own;
- `AD_SCHEDULER_STORAGE_BLOCK` names a saved `AdStorage` block (a folder, not the default);
- its flow processes import only what the flow's entrypoint imports.

Jobs are registered through the SDK (`ProductionWorker.scheduler`), started with `run_now` or a
schedule, and waited for by polling the Prefect API with a deadline (`wait_for_flow_run`).

Use it from a conftest: `from tests.support.production import production_worker  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import PrefectHTTPStatusError
from prefect.filesystems import LocalFileSystem
from prefect_sqlalchemy import AsyncDriver, AsyncSqlAlchemyConnector, ConnectionComponents
from sqlalchemy.engine import make_url

from blocks.storage import AdStorage
from config import get_settings
from db.migrate import upgrade
from flows.deployment_sync import ensure_process_pool
from scheduler.local_prefect import (
    TUNED_WORKER_ENV,
    ForkServer,
    LocalWorker,
    prefect_env,
    process_worker,
)
from scheduler.sdk import AdScheduler
from tests.support.databases import create_pg_database, drop_pg_database, pg_url

#: Base deployment name nobody deploys: the harness's jobs go to its own pool, whatever else the
#: session deployed (the `prefect deploy` test creates the real base deployment).
NO_BASE = "production-harness-no-base"
WORKER_READY_TIMEOUT_S = 90
RUN_TIMEOUT_S = 180


@dataclass
class ProductionWorker:
    """A running process worker and everything its flow runs use.

    Attributes:
        api_url: The Prefect API the worker and the tests talk to.
        pool: The worker's work pool (jobs registered through `scheduler` go there).
        database_url: The app database (the same one the worker's connector block names).
        database_block: The connector block name the worker has as `DATABASE_URL`.
        storage_block: The `AdStorage` block name the worker has as its storage.
        storage: That storage block, loaded.
        storage_root: The folder behind the storage block.
        process: The worker process (the leader of its own process group).
        log: The worker's output (flow processes' output goes there too).
        forkserver: The fork server its flow runs are forked from (its log: `forkserver.log`
            beside `log`).
    """

    api_url: str
    pool: str
    database_url: str
    database_block: str
    storage_block: str
    storage: AdStorage
    storage_root: Path
    process: subprocess.Popen[bytes]
    log: Path
    forkserver: ForkServer | None = None

    def scheduler(self, tenant_id: uuid.UUID) -> AdScheduler:
        """The SDK for `tenant_id`, registering jobs onto this worker's pool."""
        return AdScheduler(
            tenant_id, database_url=self.database_url, base_deployment=NO_BASE, work_pool=self.pool
        )

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the worker's output (for assertion messages)."""
        return self.log.read_text(errors="replace")[-chars:]


def run_now_spec(
    name: str, product_id: uuid.UUID, generator_block: str, templates: int
) -> dict[str, object]:
    """A job spec (`AdScheduler.create`) whose schedule never comes round in a test (1 January,
    03:00 UTC): its runs are the ones the test starts with `run_now`."""
    return {
        "name": name,
        "product_id": str(product_id),
        "schedule": {"type": "recurring", "cron": "0 3 1 1 *", "timezone": "UTC"},
        "templates": {"mode": "unused", "count": templates},
        "ad": {"variations": 1, "generator_block": generator_block},
    }


def engine_pid(flow_run_id: uuid.UUID, command_pid: int, worker_log: Path) -> int:
    """The process running a flow run's engine, given the pid of the command the worker started
    (the flow run's `infrastructure_pid`): the child the fork server forked for it when that
    command is the fork server's client (the server's log, `forkserver.log` beside the worker's,
    names it), else the command itself.
    """
    cmdline = Path(f"/proc/{command_pid}/cmdline").read_bytes().split(b"\0")
    if b"scheduler.forkserver_client" not in cmdline:
        return command_pid
    log = worker_log.with_name("forkserver.log")
    pattern = re.compile(rf"forked flow-run process (\d+) for {flow_run_id}")
    deadline = time.monotonic() + 30
    while not (found := pattern.search(log.read_text(errors="replace"))):
        assert time.monotonic() < deadline, f"no child for {flow_run_id} in {log}"
        time.sleep(0.05)  # polling the server's log, written as it forks
    return int(found.group(1))


async def wait_for_flow_run(
    flow_run_id: uuid.UUID, timeout_s: float = RUN_TIMEOUT_S, log: Path | None = None
) -> FlowRun:
    """Poll the API until the flow run is in a final state; the run.

    Raises:
        AssertionError: Not final within `timeout_s` (with the worker log's tail, if given).
    """
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-6000:] if log else ""
                raise AssertionError(
                    f"flow run {flow_run_id} still {run.state_name} after {timeout_s} s\n{tail}"
                )
            await asyncio.sleep(0.5)  # polling the API


async def wait_for_worker(pool: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until a worker on `pool` has sent a heartbeat; fail early if the process died."""
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    async with get_client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{log.read_text()[-4000:]}")
            try:
                if await client.read_workers_for_work_pool(pool):
                    return
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404:  # 404: the pool is not created yet
                    raise
            await asyncio.sleep(0.5)  # polling the API
    raise RuntimeError(f"no worker on {pool!r} after {WORKER_READY_TIMEOUT_S} s")


@contextmanager
def worker_process(
    pool: str,
    home: Path,
    env_extra: dict[str, str],
    log_name: str = "worker.log",
    cwd: Path | None = None,
    forkserver: bool = True,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process worker on `pool` as `ad-scheduler up` starts one (`process_worker`: with its
    fork server unless `forkserver` is False), in its own process group; stopped (group
    SIGTERM) on exit, then its fork server.

    It starts in `cwd` (default `home`, not the checkout: the pull step must find the code).
    """
    with local_worker(pool, home, env_extra, log_name, cwd, forkserver) as (worker, log):
        yield worker.process, log


@contextmanager
def local_worker(
    pool: str,
    home: Path,
    env_extra: dict[str, str],
    log_name: str = "worker.log",
    cwd: Path | None = None,
    forkserver: bool = True,
) -> Iterator[tuple[LocalWorker, Path]]:
    """`worker_process`, yielding the worker and its fork server (`LocalWorker`)."""
    env = prefect_env(home, extra={**TUNED_WORKER_ENV, **env_extra})
    log = home / log_name
    with process_worker(pool, env, log, cwd=cwd or home, forkserver=forkserver) as worker:
        yield worker, log


def worker_environment(
    api_url: str, database: str, storage_block: str, data_dir: Path
) -> dict[str, str]:
    """The variables a production worker host sets (and only those)."""
    return {
        "PREFECT_API_URL": api_url,
        "DATABASE_URL": database,
        "AD_SCHEDULER_STORAGE_BLOCK": storage_block,
        "AD_SCHEDULER_DATA_DIR": str(data_dir),
    }


@pytest_asyncio.fixture(scope="session")
async def production_worker(prefect_api: str) -> AsyncIterator[ProductionWorker]:
    """One process worker for the session, on its own pool, database and storage blocks."""
    suffix = uuid.uuid4().hex[:8]
    name = await create_pg_database("adsched_prod")
    url = pg_url(name)
    await asyncio.to_thread(upgrade, url)
    parsed = make_url(url)
    database_block = f"app-db-{suffix}"
    await AsyncSqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=AsyncDriver.POSTGRESQL_ASYNCPG,
            host=parsed.host,
            port=parsed.port,
            username=parsed.username,
            database=parsed.database,
        )
    ).asave(database_block)
    with tempfile.TemporaryDirectory(prefix="adsched-prod-") as tmp:
        root = Path(tmp)
        storage_root = root / "storage"
        storage_root.mkdir()
        storage_block = f"ad-storage-{suffix}"
        storage = AdStorage(filesystem=LocalFileSystem(basepath=str(storage_root)))
        await storage.asave(storage_block)
        pool = f"production-{suffix}"
        async with get_client() as client:
            await ensure_process_pool(client, pool)
        env = worker_environment(prefect_api, database_block, storage_block, root / "data")
        with local_worker(pool, root, env) as (local, log):
            proc = local.process
            await wait_for_worker(pool, proc, log)
            try:
                yield ProductionWorker(
                    api_url=prefect_api,
                    pool=pool,
                    database_url=url,
                    database_block=database_block,
                    storage_block=storage_block,
                    storage=storage,
                    storage_root=storage_root,
                    process=proc,
                    log=log,
                    forkserver=local.forkserver,
                )
            finally:
                from db.session import dispose_engines

                await dispose_engines()
    await drop_pg_database(name)


@pytest.fixture
def production_settings(
    production_worker: ProductionWorker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ProductionWorker]:
    """Point this test process's settings at the worker's database and storage (for seeding)."""
    monkeypatch.setenv("DATABASE_URL", production_worker.database_url)
    monkeypatch.setenv("AD_SCHEDULER_STORAGE_BLOCK", production_worker.storage_block)
    get_settings.cache_clear()
    yield production_worker
    get_settings.cache_clear()


__all__ = [
    "ProductionWorker",
    "engine_pid",
    "local_worker",
    "production_settings",
    "production_worker",
    "wait_for_flow_run",
    "wait_for_worker",
    "worker_environment",
    "worker_process",
]
