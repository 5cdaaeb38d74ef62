"""Our process pools start the engine directly, forked from the worker's fork server: a crash
and a cancellation still settle the run.

`flows.deployment_sync.process_base_job_template` sets the pool's `command` to
`setsid python -m scheduler.forkserver_client`. Prefect 3.9's process worker then uses its
`EngineCommandStarter` (no workspace supervisor), and the `on_crashed` / `on_cancellation`
hooks run in the *worker* process, which loads the flow from the flow run
(`load_flow_from_flow_run`: the pull step, then the entrypoint), instead of in a hook subprocess
of the workspace. The command asks the worker's fork server (`process_worker` starts both) for a
child that runs `prefect.engine`, relays signals to it and exits as it does. These tests run the
session's production worker (its pool is made by `ensure_process_pool`) and check, end to end:

- the command is a child of the worker in a session of its own (`setsid`;
  tests/production/test_worker_sigterm.py shows why it matters), and the run's engine a child
  of the fork server in a session of its own;
- the engine killed with SIGKILL mid-generation: its run ends Crashed, and the crashed hook (in
  the worker; no reconciler runs here) marks the job run failed/Crashed and releases its claims;
- the command killed with SIGKILL (a worker's hard kill): the engine goes with it, and the run
  is settled the same way;
- cancelled from the API mid-generation (the worker's SIGTERM to the command, relayed), its run
  ends Cancelled and the job run row mirrors it with nothing left claimed or in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling
from pydantic import SecretStr

from blocks.generators.http_service import HttpAdGenerator
from db.models import AdRun, ProductTemplateUsage, ScheduledJobRun
from db.session import session_scope
from flows.deployment_sync import engine_command
from flows.sample_data import seed_sample_data
from tests.support.http_fake import SERVICE_TOKEN, FakeServer, running, service_default
from tests.support.production import ProductionWorker, engine_pid, wait_for_flow_run

pytestmark = pytest.mark.postgres

TEMPLATES = 2
#: Long enough that the run is surely mid-generation when the test acts on it.
GENERATION_S = 30.0


async def wait_until(predicate: Callable[[], Awaitable[bool]], what: str, log: Path) -> None:
    """Poll a condition another process makes true, with a deadline."""
    deadline = time.monotonic() + 120
    while not await predicate():
        assert time.monotonic() < deadline, f"{what}: not reached\n{log.read_text()[-6000:]}"
        await asyncio.sleep(0.2)  # polling another process's writes


async def claims_of(flow_run_id: uuid.UUID) -> int:
    async with session_scope() as s:
        count = await s.scalar(
            sa.select(sa.func.count()).where(
                ProductTemplateUsage.claimed_by_flow_run_id == flow_run_id
            )
        )
    return int(count or 0)


async def ad_run_statuses(flow_run_id: uuid.UUID) -> list[str]:
    async with session_scope() as s:
        return list(
            (await s.scalars(sa.select(AdRun.status).where(AdRun.flow_run_id == flow_run_id))).all()
        )


async def run_row(flow_run_id: uuid.UUID) -> ScheduledJobRun | None:
    async with session_scope() as s:
        return await s.scalar(
            sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == flow_run_id)
        )


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@contextmanager
def slow_service() -> Iterator[FakeServer]:
    with running(FakeServer(service_default())) as service:
        service.latency_s = GENERATION_S
        yield service


async def start_mid_generation(
    worker: ProductionWorker, service: FakeServer, name: str
) -> tuple[uuid.UUID, int]:
    """Register a job, run it now, wait until its generations are in flight; (run id, pid)."""
    tenant = uuid.uuid4()
    suffix = uuid.uuid4().hex[:8]
    _brand, product, _ = await seed_sample_data(tenant, worker.storage, templates=TEMPLATES)
    await HttpAdGenerator(
        url=f"{service.url}/ads",
        auth_token=SecretStr(SERVICE_TOKEN),
        provider_limit=f"engine-{suffix}",
    ).asave(f"engine-{suffix}")
    async with worker.scheduler(tenant) as ads:
        job = await ads.create(
            {
                "name": name,
                "product_id": str(product.id),
                "schedule": {"type": "recurring", "cron": "0 3 1 1 *", "timezone": "UTC"},
                "templates": {"mode": "unused", "count": TEMPLATES},
                "ad": {"variations": 1, "generator_block": f"http-ad-generator/engine-{suffix}"},
                "template_concurrency": TEMPLATES,
            }
        )
        flow_run_id = await ads.run_now(job.id)

    async def generating() -> bool:
        return service.in_flight == TEMPLATES and await claims_of(flow_run_id) == TEMPLATES

    await wait_until(generating, "generation in flight", worker.log)
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
    assert run.infrastructure_pid, run
    pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])  # "[host:]pid"
    return flow_run_id, pid


async def test_the_pool_forks_the_engine_and_a_sigkilled_engine_is_settled(
    production_settings: ProductionWorker,
) -> None:
    worker = production_settings
    assert worker.forkserver is not None
    async with get_client() as client:
        pool = await client.read_work_pool(worker.pool)
    command = pool.base_job_template["variables"]["properties"]["command"]["default"]
    assert command == engine_command()

    with slow_service() as service:
        flow_run_id, pid = await start_mid_generation(worker, service, "killed-engine")
        # The command: started by the worker itself (no workspace supervisor between them), in
        # a session of its own (`setsid`): a signal to the worker's group does not reach it.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"scheduler.forkserver_client" in cmdline, cmdline
        assert parent_of(pid) == worker.process.pid
        assert os.getsid(pid) == pid != os.getsid(worker.process.pid)
        # The run's engine: forked by the fork server, in a session of its own too.
        engine = engine_pid(flow_run_id, pid, worker.log)
        assert engine != pid
        assert parent_of(engine) == worker.forkserver.process.pid
        assert os.getsid(engine) == engine != os.getsid(worker.forkserver.process.pid)

        os.kill(engine, signal.SIGKILL)  # the run's process only; the worker lives on
        await assert_crashed_and_settled(worker, flow_run_id)
    # The command ended as its engine did.
    await wait_gone(pid, worker.log)


async def test_a_command_killed_outright_takes_its_engine_along_and_is_settled(
    production_settings: ProductionWorker,
) -> None:
    """What a worker's hard kill does (SIGKILL to the command): the run's process must not
    outlive it, as it would not have had the command been the engine itself."""
    worker = production_settings
    with slow_service() as service:
        flow_run_id, pid = await start_mid_generation(worker, service, "killed-command")
        engine = engine_pid(flow_run_id, pid, worker.log)
        os.kill(pid, signal.SIGKILL)
        await wait_gone(engine, worker.log)
        await assert_crashed_and_settled(worker, flow_run_id)


async def wait_gone(pid: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while (
        Path(f"/proc/{pid}").exists()
        and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    ):
        assert time.monotonic() < deadline, f"process {pid} still alive\n{log.read_text()[-4000:]}"
        await asyncio.sleep(0.1)  # polling the process table


async def assert_crashed_and_settled(worker: ProductionWorker, flow_run_id: uuid.UUID) -> None:
    """The run ends Crashed, and the crashed hook (in the worker; no reconciler runs here)
    marks the job run failed/Crashed and releases its claims."""
    final = await wait_for_flow_run(flow_run_id, log=worker.log)
    assert final.state_type == StateType.CRASHED, (final.state_name, final.state)

    async def settled() -> bool:
        row = await run_row(flow_run_id)
        return row is not None and row.status == "failed" and await claims_of(flow_run_id) == 0

    await wait_until(settled, "job run settled by the crashed hook", worker.log)
    row = await run_row(flow_run_id)
    assert row is not None and row.prefect_state == "Crashed", row
    statuses = await ad_run_statuses(flow_run_id)
    assert statuses and all(s == "failed" for s in statuses), statuses
    assert worker.process.poll() is None, worker.log_tail()


async def test_a_run_cancelled_from_the_api_ends_cancelled_and_is_mirrored(
    production_settings: ProductionWorker,
) -> None:
    worker = production_settings
    with slow_service() as service:
        flow_run_id, pid = await start_mid_generation(worker, service, "cancelled-engine")
        engine = engine_pid(flow_run_id, pid, worker.log)
        async with get_client() as client:
            # What the UI's "Cancel" does: the worker sees Cancelling and stops the process.
            await client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled by a test"))

        final = await wait_for_flow_run(flow_run_id, log=worker.log)
        assert final.state_type == StateType.CANCELLED, (final.state_name, final.state)

        async def mirrored() -> bool:
            row = await run_row(flow_run_id)
            return (
                row is not None and row.status == "cancelled" and await claims_of(flow_run_id) == 0
            )

        await wait_until(mirrored, "job run mirrored as cancelled", worker.log)
    row = await run_row(flow_run_id)
    assert row is not None and row.prefect_state == "Cancelled", row
    statuses = await ad_run_statuses(flow_run_id)
    assert statuses and not {"pending", "running"} & set(statuses), statuses

    # The run's process and the worker's command for it are gone.
    await wait_gone(engine, worker.log)
    await wait_gone(pid, worker.log)
    assert worker.process.poll() is None, worker.log_tail()
