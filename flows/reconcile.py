"""`reconcile_job_runs`: heals the run mirror from the Prefect API (scheduled every few minutes).

Hooks do not run when a worker dies with its flow, for runs a deployment concurrency limit
cancels before they start, or for zombies (notes/PREFECT.md §3). This flow:

1. mirrors every recent run of `run-scheduled-job` whose row is missing or behind Prefect's state;
2. crashes runs whose flow process stopped beating: a running `run-scheduled-job` touches its row
   every `AD_SCHEDULER_RUN_HEARTBEAT_SECONDS`; a row still `running` whose last touch is older
   than `stale_after_seconds` belongs to a dead process, so its Prefect run is set Crashed;
3. releases template claims held by runs that have ended;
4. re-derives the counters of every job it touched.

Every step is idempotent: a second pass finds nothing to do.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed
from pydantic import BaseModel

from db.models import ScheduledJobRun
from db.queries.job_runs import derive_job_state, status_rank
from db.queries.templates import release_claims, runs_holding_claims
from db.session import session_scope
from db.types import utcnow
from flows.history import apply_job_status, event_for, mirror_flow_run

PAGE = 200
STARTED_STATES = [
    StateType.RUNNING,
    StateType.COMPLETED,
    StateType.FAILED,
    StateType.CRASHED,
    StateType.CANCELLED,
    StateType.CANCELLING,
]
TERMINAL_STATES = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


class ReconcileReport(BaseModel):
    """What one pass changed (all zero on a second pass)."""

    rows_healed: int = 0
    runs_crashed: int = 0
    claims_released: int = 0
    jobs_changed: int = 0


async def _recent_runs(lookback: timedelta, job_ids: set[uuid.UUID] | None) -> list[FlowRun]:
    since = utcnow() - lookback
    runs: list[FlowRun] = []
    async with get_client() as client:
        offset = 0
        while True:
            page = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["run-scheduled-job"])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since),
                    state=dict(type=FlowRunFilterStateType(any_=STARTED_STATES)),
                ),
                limit=PAGE,
                offset=offset,
            )
            runs.extend(page)
            if len(page) < PAGE:
                break
            offset += PAGE
    if job_ids is not None:
        runs = [r for r in runs if _job_of(r) in job_ids]
    return runs


def _job_of(run: FlowRun) -> uuid.UUID | None:
    raw = (run.parameters or {}).get("job_id")
    return uuid.UUID(str(raw)) if raw else None


@flow(name="reconcile-job-runs", log_prints=False)
async def reconcile_job_runs(
    lookback_hours: int = 48,
    stale_after_seconds: int = 180,
    job_ids: list[uuid.UUID] | None = None,
) -> ReconcileReport:
    """Heal `scheduled_job_runs` from the Prefect API.

    Args:
        lookback_hours: How far back to compare runs.
        stale_after_seconds: A running row whose flow has not beaten for this long is dead.
        job_ids: Only these jobs (default: every job).
    """
    logger = get_run_logger()
    report = ReconcileReport()
    scope = set(job_ids) if job_ids else None
    touched: set[uuid.UUID] = set()

    runs = await _recent_runs(timedelta(hours=lookback_hours), scope)
    async with session_scope() as session:
        rows = {
            r.flow_run_id: r
            for r in (
                await session.scalars(
                    sa.select(ScheduledJobRun).where(
                        ScheduledJobRun.flow_run_id.in_([r.id for r in runs])
                    )
                )
            ).all()
        }
    # 1. rows missing or behind Prefect.
    for run in runs:
        event = event_for(run)
        if event is None:
            continue
        row = rows.get(run.id)
        if row is None or status_rank(event.status) > status_rank(row.status):
            await mirror_flow_run(run)
            report.rows_healed += 1
            touched.add(event.scheduled_job_id)

    # 2. running rows whose process stopped beating.
    deadline = utcnow() - timedelta(seconds=stale_after_seconds)
    async with session_scope() as session:
        query = sa.select(ScheduledJobRun).where(
            ScheduledJobRun.status == "running",
            ScheduledJobRun.flow_run_id.is_not(None),
            ScheduledJobRun.updated_at <= deadline,
        )
        if scope:
            query = query.where(ScheduledJobRun.scheduled_job_id.in_(scope))
        stale = list((await session.scalars(query)).all())
    async with get_client() as client:
        for row in stale:
            assert row.flow_run_id is not None
            try:
                run = await client.read_flow_run(row.flow_run_id)
            except ObjectNotFound:
                continue
            if run.state and run.state.type == StateType.RUNNING:
                await client.set_flow_run_state(
                    run.id,
                    Crashed(
                        message=f"the flow process stopped reporting for over "
                        f"{stale_after_seconds} s (worker or process killed)"
                    ),
                    force=True,
                )
                run = await client.read_flow_run(run.id)
                report.runs_crashed += 1
            await mirror_flow_run(run)
            touched.add(row.scheduled_job_id)

        # 3. claims held by runs that ended (or that Prefect no longer knows).
        for flow_run_id in await _holders(scope):
            try:
                run = await client.read_flow_run(flow_run_id)
                ended = run.state is not None and run.state.type in TERMINAL_STATES
            except ObjectNotFound:
                ended = True
            if ended:
                async with session_scope() as session:
                    released = await release_claims(session, flow_run_id=flow_run_id)
                report.claims_released += len(released)

    # 4. counters of the jobs touched.
    for job_id in touched:
        async with session_scope() as session:
            state = await derive_job_state(session, job_id)
        if state.status_changed_to:
            await apply_job_status(job_id)
            report.jobs_changed += 1
    logger.info("reconciled: %s", report.model_dump())
    return report


async def _holders(scope: set[uuid.UUID] | None) -> list[uuid.UUID]:
    async with session_scope() as session:
        holders = await runs_holding_claims(session)
        if scope is None:
            return holders
        # Claims of manual create-ads runs have no job: keep only the scoped jobs' runs.
        in_scope = set(
            (
                await session.scalars(
                    sa.select(ScheduledJobRun.flow_run_id).where(
                        ScheduledJobRun.scheduled_job_id.in_(scope)
                    )
                )
            ).all()
        )
    return [h for h in holders if h in in_scope]
