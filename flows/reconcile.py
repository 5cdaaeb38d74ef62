"""`reconcile_job_runs`: heals the run mirror from the Prefect API (scheduled every few minutes).

Hooks do not run when a worker dies with its flow, for runs a deployment concurrency limit
cancels before they start, for runs that crash before their flow starts (a bad pull step, an
import error), or for zombies (notes/PREFECT.md §3). This flow:

1. mirrors every recent run of `run-scheduled-job` whose row is missing or behind Prefect's state
   (a run that crashed before its flow started gets its row here, failed, with Prefect's message);
2. crashes runs whose flow process stopped beating: a running `run-scheduled-job` touches its row
   every `AD_SCHEDULER_RUN_HEARTBEAT_SECONDS`; a row still `running` whose last touch is older
   than `stale_after_seconds` belongs to a dead process, so its Prefect run is set Crashed;
3. settles the work of runs that have ended: ad runs still pending fail with the reason, template
   claims are released, ad files written without rows are deleted (`flows/run_recovery.py`);
4. finishes runs that ended before writing their summary: `ad_run_ids` and `templates_used` from
   their ad runs, deliveries left mid-send closed, completed ad runs exported to the channels
   they have no delivery for;
5. re-derives the counters of every job it touched;
6. takes in what people changed in the Prefect UI;
7. refreshes the job boards that miss requests nobody is serving.

Each run and each job is handled on its own: one that fails (a job row whose cron Prefect
rejects, a run the API cannot read) is reported in `problems`, and the others proceed. Every step
is idempotent: a second pass finds nothing to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.client.orchestration import PrefectClient, get_client
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
from pydantic import BaseModel, Field

from db.models import ScheduledJob, ScheduledJobRun
from db.queries.ad_runs import flow_runs_with_unfinished_ad_runs, unfinished_job_runs
from db.queries.job_runs import derive_job_state, status_rank
from db.queries.templates import runs_holding_claims
from db.session import session_scope
from db.types import utcnow
from domain.vocab import SCHEDULED_JOB_FLOW
from flows.history import apply_job_status, event_for, mirror_flow_run
from flows.job_board import refresh_boards_behind
from flows.run_recovery import describe_failure, finish_job_run, settle_run_work
from flows.ui_sync import sync_ui_changes

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
    """What one pass changed (all zero, and no problems, on a second pass).

    Attributes:
        rows_healed: Run rows created or advanced from Prefect's state.
        runs_crashed: Running runs whose process stopped beating, set Crashed.
        claims_released: Template claims released for runs that ended.
        ad_runs_settled: Ad runs left pending by runs that ended, now failed with the reason.
        runs_finished: Ended runs whose summary (ad runs, templates used) was written here.
        ad_runs_exported: Completed ad runs of such runs exported here.
        jobs_changed: Jobs whose status changed (completed or paused).
        boards_refreshed: Tenants' job boards refreshed because they missed requests.
        problems: One line per run or job that could not be handled (the rest were).
    """

    rows_healed: int = 0
    runs_crashed: int = 0
    claims_released: int = 0
    ad_runs_settled: int = 0
    runs_finished: int = 0
    ad_runs_exported: int = 0
    jobs_changed: int = 0
    boards_refreshed: int = 0
    problems: list[str] = Field(default_factory=list)


async def _recent_runs(lookback: timedelta, job_ids: set[uuid.UUID] | None) -> list[FlowRun]:
    since = utcnow() - lookback
    runs: list[FlowRun] = []
    async with get_client() as client:
        offset = 0
        while True:
            page = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[SCHEDULED_JOB_FLOW])),
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
    """Heal `scheduled_job_runs` from the Prefect API and settle what ended runs left behind.

    Every run and every job is handled on its own (own transaction, errors caught): one that
    cannot be handled is named in `problems` with its reason, and the others proceed.

    Args:
        lookback_hours: How far back to compare runs.
        stale_after_seconds: A running row whose flow has not beaten for this long is dead.
        job_ids: Only these jobs (default: every job).
    """
    logger = get_run_logger()
    report = ReconcileReport()
    scope = set(job_ids) if job_ids else None
    touched: set[uuid.UUID] = set()
    lookback = timedelta(hours=lookback_hours)

    async def isolated(what: str, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception as exc:
            problem = f"{what}: {describe_failure(exc)}"
            logger.error("reconcile: %s", problem)
            report.problems.append(problem[:500])

    runs = await _recent_runs(lookback, scope)
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
    # 1. rows missing or behind Prefect (a run that crashed before its flow started has no row:
    #    it gets one here, failed, with Prefect's state message as its reason).
    for run in runs:
        event = event_for(run)
        if event is None:
            continue
        row = rows.get(run.id)
        if row is None or status_rank(event.status) > status_rank(row.status):

            async def heal(run: FlowRun = run, job_id: uuid.UUID = event.scheduled_job_id) -> None:
                await mirror_flow_run(run, derive=False)  # derived once, in step 5
                touched.add(job_id)
                report.rows_healed += 1

            await isolated(f"flow run {run.id}", heal)

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

            async def crash(row: ScheduledJobRun = row) -> None:
                assert row.flow_run_id is not None
                try:
                    run = await client.read_flow_run(row.flow_run_id)
                except ObjectNotFound:
                    return
                touched.add(row.scheduled_job_id)
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
                await mirror_flow_run(run, derive=False)  # derived once, in step 5

            await isolated(f"flow run {row.flow_run_id}", crash)

        # 3. claims and pending ad runs held by runs that ended (or that Prefect no longer
        #    knows): the ad runs fail with the reason the run ended, the claims are released.
        for flow_run_id in await _holders(scope):

            async def settle(flow_run_id: uuid.UUID = flow_run_id) -> None:
                reason = await _end_reason(client, flow_run_id)
                if reason is None:
                    return  # still running: its work is its own
                settled = await settle_run_work(flow_run_id, reason)
                report.claims_released += len(settled.released)
                report.ad_runs_settled += len(settled.failed_ad_runs)

            await isolated(f"flow run {flow_run_id}", settle)

    # 4. ended runs that never wrote their summary: write it from their ad runs (completed ones
    #    are in `templates_used`, their usage confirmed with them) and export what was not.
    async with session_scope() as session:
        unfinished = [
            r
            for r in await unfinished_job_runs(session, job_ids=list(scope) if scope else None)
            if r.flow_run_id is not None and r.created_at >= utcnow() - lookback
        ]
    for row in unfinished:

        async def finish(row: ScheduledJobRun = row) -> None:
            touched.add(row.scheduled_job_id)
            done = await finish_job_run(row.id)
            report.runs_finished += 1
            report.ad_runs_exported += done.ad_runs_exported

        await isolated(f"job run {row.id}", finish)

    # 5. counters of the jobs touched, each on its own.
    for job_id in sorted(touched):

        async def derive(job_id: uuid.UUID = job_id) -> None:
            async with session_scope() as session:
                state = await derive_job_state(session, job_id)
            if state.schedule_problem:
                report.problems.append(f"job {job_id}: {state.schedule_problem}"[:500])
            if state.status_changed_to:
                await apply_job_status(job_id)
                report.jobs_changed += 1

        await isolated(f"job {job_id}", derive)

    # 6. what people did to job deployments in the Prefect UI (the watcher sees it in seconds).
    async def ui_changes() -> None:
        taken = await sync_ui_changes(job_ids=list(scope) if scope else None)
        report.jobs_changed += taken.jobs_changed
        report.problems.extend(p[:500] for p in taken.problems)

    await isolated("changes made in the Prefect UI", ui_changes)

    # 7. job boards left behind (a holder that handed on at its round limit, or died): the run
    #    or change that asked last did not publish, so the board would show an older state.
    async def boards() -> None:
        tenants: list[uuid.UUID] | None = None
        if scope:
            async with session_scope() as session:
                owners = await session.scalars(
                    sa.select(ScheduledJob.tenant_id).where(ScheduledJob.id.in_(scope))
                )
                tenants = sorted({t for t in owners.all() if t is not None})
        report.boards_refreshed += len(await refresh_boards_behind(tenants))

    await isolated("job boards", boards)
    logger.info("reconciled: %s", report.model_dump())
    return report


async def _end_reason(client: PrefectClient, flow_run_id: uuid.UUID) -> str | None:
    """Why the run ended ("the run ended Crashed: …"), or None while it has not."""
    try:
        run = await client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return "the run no longer exists in Prefect"
    if run.state is None or run.state.type not in TERMINAL_STATES:
        return None
    message = f": {run.state.message}" if run.state.message else ""
    return f"the run ended {run.state.name}{message}"[:1000]


async def _holders(scope: set[uuid.UUID] | None) -> list[uuid.UUID]:
    """Flow runs holding claims or unfinished ad runs (within `scope`'s jobs, when given)."""
    async with session_scope() as session:
        holders = set(await runs_holding_claims(session))
        holders |= set(await flow_runs_with_unfinished_ad_runs(session))
        if scope is None:
            return sorted(holders)
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
    return sorted(h for h in holders if h in in_scope)
