"""One bad row never stops the rest, and a run that never started its flow is still recorded.

Real databases, a real Prefect server, and (for the crash) a real process worker whose flow
process dies in its pull step, as on a machine without the deployment's code folder.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled
from typer.testing import CliRunner

from db.models import ScheduledJob, ScheduledJobRun
from db.session import session_scope
from db.types import utcnow
from domain.params import AdParameters, JobParameters
from flows.reconcile import reconcile_job_runs
from scheduler import cli as cli_module
from scheduler.cli import app
from scheduler.local_prefect import TUNED_WORKER_ENV, background_process, prefect_env, worker_args
from tests.flows.support import deployment_for, execute, job_with_templates, scheduled_run

PARAMS = JobParameters(ad=AdParameters(variations=1)).model_dump(mode="json")


async def _row(flow_run_id: uuid.UUID) -> ScheduledJobRun | None:
    async with session_scope() as s:
        return await s.scalar(
            sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == flow_run_id)
        )


async def _break_cron(job_id: uuid.UUID, cron: str, timezone: str) -> None:
    """Write a schedule Prefect rejects straight into the row (hand-edited or adopted data)."""
    async with session_scope() as s:
        await s.execute(
            sa.update(ScheduledJob)
            .where(ScheduledJob.id == job_id)
            .values(cron_expression=cron, timezone=timezone)
        )


@pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")
async def test_bad_cron_row_neither_sticks_its_run_nor_stops_the_reconciler(tenant_id) -> None:
    bad = await job_with_templates(tenant_id, templates=4, template_count=1, parameters=PARAMS)
    await _break_cron(bad.id, "61 * * * *", "Mars/Olympus")
    good = await job_with_templates(tenant_id, templates=4, template_count=1, parameters=PARAMS)
    deployment_id = await deployment_for(f"iso-{tenant_id.hex[:8]}")

    # 1. The bad job's own run: its hooks' rows are committed before the job is re-derived.
    ran = await scheduled_run(deployment_id, bad.id, utcnow(), tags=["auto-scheduled"])
    state = await execute(ran)
    assert state.is_completed(), state.message
    row = await _row(ran.id)
    assert row is not None and (row.status, row.prefect_state) == ("completed", "Completed")
    async with session_scope() as s:
        stored = await s.get(ScheduledJob, bad.id)
    assert stored is not None and (stored.runs_completed, stored.next_run_at) == (1, None)

    # 2. One reconciler pass over three jobs: runs hooks never saw for the bad job, the good job
    #    and a job whose row does not exist. Each is handled alone; the bad ones are named.
    ghost = uuid.uuid4()
    unseen = {}
    async with get_client() as client:
        for job_id in (bad.id, ghost, good.id):
            run = await scheduled_run(deployment_id, job_id, utcnow(), tags=["auto-scheduled"])
            await client.set_flow_run_state(
                run.id, Cancelled(message="Deployment concurrency limit reached."), force=True
            )
            unseen[job_id] = run.id

    report = await reconcile_job_runs(job_ids=[bad.id, ghost, good.id])

    assert report.rows_healed == 2
    for job_id in (bad.id, good.id):
        healed = await _row(unseen[job_id])
        assert healed is not None and (healed.status, healed.skip_reason) == ("skipped", "overlap")
    assert await _row(unseen[ghost]) is None
    problems = "\n".join(report.problems)
    assert f"flow run {unseen[ghost]}" in problems
    assert f"job {bad.id}: cron '61 * * * *' in time zone 'Mars/Olympus'" in problems
    assert "not schedulable" in problems and len(report.problems) == 2


@pytest.mark.usefixtures("prefect_api", "data_dir")
async def test_run_that_crashed_before_its_flow_started_is_recorded_with_its_reason(
    pg_database_url, tenant_id, monkeypatch
) -> None:
    from config import get_settings

    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    get_settings.cache_clear()
    job = await job_with_templates(tenant_id, templates=2, template_count=1, parameters=PARAMS)
    pool = f"crash-{tenant_id.hex[:8]}"
    deployment_id = await deployment_for(f"crash-{tenant_id.hex[:8]}")
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        # The image's code folder, on a worker outside the image: the pull step fails.
        missing = f"/nonexistent/{tenant_id.hex}/ad-scheduler"
        await client.update_deployment(
            deployment_id,
            DeploymentUpdate(
                work_pool_name=pool,
                pull_steps=[
                    {"prefect.deployments.steps.set_working_directory": {"directory": missing}}
                ],
            ),
        )
    flow_run = await scheduled_run(deployment_id, job.id, utcnow(), tags=["auto-scheduled"])

    with tempfile.TemporaryDirectory(prefix="worker-home-") as home:
        env = prefect_env(Path(home), extra=TUNED_WORKER_ENV)
        env["PREFECT_API_URL"] = os.environ["PREFECT_API_URL"]  # the test server
        with background_process(worker_args(pool), env, Path(home) / "worker.log"):
            deadline = time.monotonic() + 120
            async with get_client() as client:
                while True:
                    state = (await client.read_flow_run(flow_run.id)).state
                    if state is not None and state.is_final():
                        break
                    assert time.monotonic() < deadline, "the worker never ended the run"
                    await asyncio.sleep(0.5)  # polling another process's progress
    assert state.type == StateType.CRASHED, state
    assert await _row(flow_run.id) is None  # no hook ran: the flow never started

    report = await reconcile_job_runs(job_ids=[job.id])

    assert report.rows_healed == 1 and report.problems == []
    row = await _row(flow_run.id)
    assert row is not None and (row.status, row.prefect_state) == ("failed", "Crashed")
    assert (row.error_message or "").startswith("Crashed: ")
    assert (state.message or "")[:40] in (row.error_message or "")
    async with session_scope() as s:
        stored = await s.get(ScheduledJob, job.id)
    assert stored is not None and stored.consecutive_failures == 1

    # A person sees it, with its reason, in `runs` and `jobs list`.
    monkeypatch.setattr(cli_module.console, "width", 250)

    def cli(*args: str) -> Any:
        return asyncio.to_thread(CliRunner().invoke, app, [*args, "--tenant", str(tenant_id)])

    runs = await cli("runs", job.name)
    assert runs.exit_code == 0, runs.output
    assert "failed" in runs.output and "Crashed:" in runs.output
    listed = await cli("jobs", "list")
    assert listed.exit_code == 0, listed.output
    assert "failed: Crashed:" in listed.output
