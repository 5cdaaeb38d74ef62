"""A flow process ends when its run ends, even after its worker was stopped mid-run.

A process worker starts each flow run in a process of its own session, so a signal to the
worker's process group does not reach it. On SIGTERM the Prefect 3.9 worker kills its flow
processes on the way out (SIGKILL, at once: the run is left Running for the reconciler). On
SIGKILL nobody does: the flow process goes on, but its stdout/stderr are pipes to the dead worker.
Its next console log line used to raise `SystemExit` (rich's broken-pipe handling) inside a
template's task: the run was recorded Crashed although its templates finished, and the cut-short
event loop teardown left AnyIO worker threads that kept the process in `threading._shutdown` for
good (it once hung 20+ minutes holding two database connections). Several templates in flight
make several tasks log after the kill, which is what wedged it. Either way the flow process must
then be gone and its database connections with it; after a SIGKILL the run ends on its own terms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from pydantic import SecretStr

from blocks.generators.http_service import HttpAdGenerator
from flows.deployment_sync import ensure_process_pool
from flows.sample_data import seed_sample_data
from scheduler.sdk import AdScheduler
from tests.support.databases import PG_ADMIN_DSN
from tests.support.http_fake import SERVICE_TOKEN, FakeServer, running, service_default
from tests.support.production import (
    NO_BASE,
    ProductionWorker,
    engine_pid,
    run_now_spec,
    wait_for_flow_run,
    wait_for_worker,
    worker_environment,
    worker_process,
)

pytestmark = pytest.mark.postgres

#: How long a flow process may take to exit after its worker stopped (its generation takes 3 s).
EXIT_BOUND_S = 30
#: How long a worker may take to stop before it is signalled again, as a service manager would.
STOP_GRACE_S = 20
#: Templates in flight when the worker stops: each one's task logs after the stop.
TEMPLATES = 3
PG_PORT_HEX = f"{5432:04X}"


def pg_client_ports(pid: int) -> set[int]:
    """Local ports of the process's TCP connections to PostgreSQL (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            if inode in inodes and remote.endswith(f":{PG_PORT_HEX}"):
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def backends_on(ports: set[int], database: str) -> int:
    """Server backends of `database` whose client is one of `ports`."""
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = $1 AND client_port = ANY($2)",
                database,
                list(ports),
            )
        )
    finally:
        await conn.close()


async def test_flow_processes_end_with_their_runs_when_their_workers_are_stopped(
    production_settings: ProductionWorker, tmp_path: Path
) -> None:
    """SIGTERM: the worker stops its flow processes on the way out. SIGKILL: nobody stops the
    flow process (its own session), so it ends its run on its own and must then exit.

    Both at once, each with a worker of its own: the stops are what take the time.
    """
    await HttpAdGenerator.register_type_and_schema()  # once, not raced by the two saves
    await asyncio.gather(
        stopped_mid_run(production_settings, tmp_path / "term", signal.SIGTERM),
        stopped_mid_run(production_settings, tmp_path / "kill", signal.SIGKILL),
    )


async def stopped_mid_run(worker: ProductionWorker, tmp_path: Path, stop: signal.Signals) -> None:
    """Run a job on a fresh worker, send `stop` to the worker's group mid-generation, check."""
    tenant = uuid.uuid4()
    suffix = uuid.uuid4().hex[:8]
    _brand, product, _ = await seed_sample_data(tenant, worker.storage, templates=TEMPLATES)
    # A worker of its own (this test stops it), on a pool of its own, configured like the others.
    pool = f"stop-{suffix}"
    async with get_client() as client:
        await ensure_process_pool(client, pool)
    env = worker_environment(
        worker.api_url, worker.database_block, worker.storage_block, tmp_path / "data"
    )
    with (
        running(FakeServer(service_default())) as service,
        worker_process(pool, tmp_path, env) as (proc, log),
    ):
        service.latency_s = 3.0  # the generation in flight when the worker is stopped
        await HttpAdGenerator(
            url=f"{service.url}/ads",
            auth_token=SecretStr(SERVICE_TOKEN),
            provider_limit=f"prod-stop-{suffix}",
        ).asave(f"svc-{suffix}")
        await wait_for_worker(pool, proc, log)
        async with AdScheduler(
            tenant, database_url=worker.database_url, base_deployment=NO_BASE, work_pool=pool
        ) as ads:
            job = await ads.create(
                run_now_spec(
                    "stopped-worker", product.id, f"http-ad-generator/svc-{suffix}", TEMPLATES
                )
            )
            flow_run_id = await ads.run_now(job.id)

        deadline = time.monotonic() + 120
        while not service.in_flight:
            assert time.monotonic() < deadline, log.read_text()[-6000:]
            assert proc.poll() is None, log.read_text()[-6000:]
            await asyncio.sleep(0.1)  # polling the fake provider
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
        assert run.infrastructure_pid, run
        command_pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])  # "[host:]pid"
        # The run's process: the fork server's child for it (the command is its client).
        flow_pid = engine_pid(flow_run_id, command_pid, log)
        ports = pg_client_ports(flow_pid)
        assert ports, "the flow process holds no PostgreSQL connection mid-run"

        os.killpg(proc.pid, stop)  # the worker's process group, as a service manager does
        try:
            await asyncio.to_thread(proc.wait, STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            # Prefect 3.9's worker turns SIGTERM into a SIGINT to itself, which a busy worker
            # has been seen to lose (full-suite CI: the worker went on, its run completed). A
            # service manager then escalates (systemd's TimeoutStopSec, Kubernetes' grace
            # period); a second SIGTERM is Prefect's own way to SIGKILL the worker.
            assert stop is signal.SIGTERM
            os.killpg(proc.pid, stop)
            await asyncio.to_thread(proc.wait, 30)

        deadline = time.monotonic() + EXIT_BOUND_S
        try:
            # The run's process and the worker's command for it (which waits for it) both end.
            while alive(flow_pid) or alive(command_pid):
                assert time.monotonic() < deadline, (
                    f"flow process {flow_pid} (command {command_pid}) still alive "
                    f"{EXIT_BOUND_S} s after its worker got {stop.name}\n{log.read_text()[-6000:]}"
                )
                await asyncio.sleep(0.2)  # polling the process table
        finally:
            for pid in (flow_pid, command_pid):
                if alive(pid):  # a failed test leaves no process behind
                    os.kill(pid, signal.SIGKILL)
    database = worker.database_url.rsplit("/", 1)[1]
    assert await backends_on(ports, database) == 0
    if stop is signal.SIGKILL:
        # Nobody killed it, and a worker that vanished is no reason for the run to fail: the
        # flow process finished every template, recorded Completed itself (the hooks ran) and
        # exited.
        final = await wait_for_flow_run(flow_run_id, timeout_s=10, log=log)
        assert final.state_name == "Completed", (final.state_name, final.state)
        async with worker.scheduler(tenant) as ads:
            [row] = await ads.runs(job.id)
        assert row.status == "completed", (row.status, row.error_message)
        assert len(row.templates_used or []) == TEMPLATES, row.templates_used
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        # The connections were handed back by the flow itself, after the final state's mirror:
        # its final hook ran every step, none of which failed.
        messages = [entry.message for entry in logs]
        assert "Hook 'finish_run' finished running successfully" in messages, messages
        assert not [m for m in messages if "final-state step" in m], messages
