"""The reconciler heals what hooks cannot see: a flow process killed with SIGKILL mid-run."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from blocks.generators.local import LocalAdRenderer
from db.models import ProductTemplateUsage, ScheduledJobRun
from db.session import session_scope
from db.types import utcnow
from domain.params import AdParameters, JobParameters
from flows.history import on_state_change
from flows.reconcile import reconcile_job_runs
from tests.flows.support import deployment_for, job_with_templates, scheduled_run

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def _wait_until(predicate, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)  # polling a condition in another process


async def _row(flow_run_id) -> ScheduledJobRun | None:
    async with session_scope() as s:
        return await s.scalar(
            sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == flow_run_id)
        )


async def _claims(flow_run_id) -> int:
    async with session_scope() as s:
        return (
            await s.scalar(
                sa.select(sa.func.count()).where(
                    ProductTemplateUsage.claimed_by_flow_run_id == flow_run_id
                )
            )
            or 0
        )


async def test_sigkilled_run_is_healed_and_its_claims_released(tenant_id) -> None:
    block = f"slow-{tenant_id.hex[:10]}"
    await LocalAdRenderer(latency_seconds=60, provider_limit=f"slow-{tenant_id.hex[:8]}").asave(
        block
    )
    params = JobParameters(ad=AdParameters(variations=1, generator_block=block))
    job = await job_with_templates(
        tenant_id, templates=3, template_count=2, parameters=params.model_dump(mode="json")
    )
    deployment_id = await deployment_for(f"kill-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.flows.run_one", str(flow_run.id)],
        cwd=ROOT,
        env=dict(os.environ),
        start_new_session=True,
    )
    try:

        async def working() -> bool:
            row = await _row(flow_run.id)
            return row is not None and row.status == "running" and await _claims(flow_run.id) == 2

        await _wait_until(working)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    async with get_client() as client:
        assert (await client.read_flow_run(flow_run.id)).state.type == StateType.RUNNING
    report = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    assert (report.runs_crashed, report.claims_released) == (1, 2)

    row = await _row(flow_run.id)
    assert row is not None
    assert (row.status, row.prefect_state) == ("failed", "Crashed")
    assert row.error_message and row.error_message.startswith("Crashed:")
    assert await _claims(flow_run.id) == 0
    async with get_client() as client:
        assert (await client.read_flow_run(flow_run.id)).state.type == StateType.CRASHED

    again = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    assert again.model_dump() == {
        "rows_healed": 0,
        "runs_crashed": 0,
        "claims_released": 0,
        "ad_runs_settled": 0,
        "runs_finished": 0,
        "ad_runs_exported": 0,
        "jobs_changed": 0,
        "boards_refreshed": 0,
        "problems": [],
    }


async def test_reconciler_creates_rows_for_runs_hooks_never_saw(tenant_id) -> None:
    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    deployment_id = await deployment_for(f"cancel-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())
    from prefect.states import Cancelled

    async with get_client() as client:
        # What a CANCEL_NEW deployment limit does to a run that never started.
        await client.set_flow_run_state(
            flow_run.id, Cancelled(message="Deployment concurrency limit reached."), force=True
        )
    assert await _row(flow_run.id) is None
    report = await reconcile_job_runs(job_ids=[job.id])
    assert report.rows_healed == 1
    row = await _row(flow_run.id)
    assert row is not None and (row.status, row.skip_reason) == ("skipped", "overlap")
    assert (await reconcile_job_runs(job_ids=[job.id])).rows_healed == 0


async def test_hook_that_cannot_reach_the_database_does_not_raise(
    tenant_id, monkeypatch, caplog
) -> None:
    from config import get_settings

    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    deployment_id = await deployment_for(f"hook-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://nobody:s3cret@127.0.0.1:1/none")
    # The database stays away: one attempt, not the ~25 s a brief outage is given.
    monkeypatch.setenv("AD_SCHEDULER_DB_RETRY_ATTEMPTS", "1")
    get_settings.cache_clear()
    with caplog.at_level(logging.ERROR):
        await on_state_change(None, flow_run, flow_run.state)
    assert "could not record state" in caplog.text
    assert "s3cret" not in caplog.text


async def test_running_is_recorded_by_the_body_on_a_first_start_by_the_hook_after_a_pause(
    tenant_id,
) -> None:
    """A first Running is left to the flow body (it records the run at once, with its slot
    claim); a run back from a pause (approval) is recorded by the Running hook."""
    from prefect.states import Running

    job = await job_with_templates(tenant_id, templates=1)
    deployment_id = await deployment_for(f"running-hook-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())

    await on_state_change(None, flow_run, Running())
    assert await _row(flow_run.id) is None

    flow_run.empirical_policy.pause_keys = {"approval"}
    await on_state_change(None, flow_run, Running())
    row = await _row(flow_run.id)
    assert row is not None and row.status == "running"
