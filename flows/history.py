"""The run mirror: Prefect flow-run states → `scheduled_job_runs`, and job status → Prefect.

State hooks give freshness; the reconciler (flows/reconcile.py) gives completeness — hooks are
client-side and do not run when a worker dies with its flow, for runs a deployment concurrency
limit cancels, or for zombies the server marks crashed (notes/PREFECT.md §3). Both report through
`mirror_flow_run`, which is idempotent and monotonic. A final state re-derives the job's counters
(Running cannot change them: it is only recorded); the reconciler derives each job it touched
once, after mirroring. A status the derivation changes (completed, paused) reaches the job's
deployment through the SDK's own plan and converge (`flows/deployment_sync.py`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect.client.schemas.objects import FlowRun, State, StateType

from db.queries.job_runs import JobRunEvent, derive_job_state, upsert_job_run
from db.session import session_scope
from domain.vocab import TERMINAL_RUN_STATUSES, RunStatus
from flows.run_recovery import settle_run_work

logger = logging.getLogger("ad_scheduler.history")

#: Tags that mark a run as fired by the job's schedule rather than by a person.
SCHEDULE_TAGS = {"auto-scheduled", "one-time"}
SKIPPED_STATE_NAME = "Skipped"
#: A Completed run whose ads were made (and count) but whose exports failed.
EXPORTS_FAILED_STATE_NAME = "Exports failed"
OVERLAP_MESSAGE = "concurrency limit"
#: States after which a job's counters or status may change (terminal ones).
_DERIVING_STATES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
)


def run_trigger(flow_run: FlowRun) -> str:
    """ "schedule" for runs the schedule (or a one-time job) created, else "manual"."""
    if flow_run.auto_scheduled or SCHEDULE_TAGS & set(flow_run.tags or ()):
        return "schedule"
    return "manual"


def was_suspended(flow_run: FlowRun) -> bool:
    """Whether the run was suspended before (Prefect keeps a suspended run's pause keys): a run
    back from its approval, not a first start."""
    return bool(flow_run.empirical_policy.pause_keys)


def scheduled_time(flow_run: FlowRun) -> datetime | None:
    """The time the run was scheduled for (what misfire and duplicate-slot checks compare)."""
    when = flow_run.expected_start_time or (
        flow_run.state.state_details.scheduled_time if flow_run.state else None
    )
    return datetime.fromtimestamp(when.timestamp(), tz=UTC) if when else None


def _aware(value: datetime | None) -> datetime | None:
    return datetime.fromtimestamp(value.timestamp(), tz=UTC) if value else None


def status_for(state: State) -> tuple[RunStatus, str | None]:
    """The mirror status (and skip reason) for a Prefect state."""
    kind = state.type
    if kind == StateType.COMPLETED:
        if state.name == SKIPPED_STATE_NAME:
            return "skipped", None
        return "completed", None
    if kind in (StateType.FAILED, StateType.CRASHED):
        return "failed", None
    if kind == StateType.CANCELLED:
        if OVERLAP_MESSAGE in (state.message or "").lower():
            return "skipped", "overlap"
        return "cancelled", None
    if kind in (StateType.RUNNING, StateType.CANCELLING):
        return "running", None
    if kind == StateType.PAUSED:  # only the approval gate suspends runs (flows/approval.py)
        return "awaiting_approval", None
    return "pending", None


def event_for(flow_run: FlowRun, state: State | None = None) -> JobRunEvent | None:
    """The mirror event for a flow run of `run-scheduled-job` (None for other flows)."""
    raw_job = (flow_run.parameters or {}).get("job_id")
    if raw_job is None:
        return None
    state = state or flow_run.state
    if state is None:
        return None
    status, skip_reason = status_for(state)
    terminal = status in TERMINAL_RUN_STATUSES
    message = state.message if status in ("failed", "cancelled") else None
    if state.type == StateType.CRASHED and message:
        message = f"Crashed: {message}"
    return JobRunEvent(
        flow_run_id=flow_run.id,
        scheduled_job_id=uuid.UUID(str(raw_job)),
        status=status,
        flow_run_name=flow_run.name,
        scheduled_for=scheduled_time(flow_run),
        trigger=run_trigger(flow_run),
        started_at=_aware(flow_run.start_time),
        completed_at=(_aware(flow_run.end_time) or _aware(state.timestamp)) if terminal else None,
        error_message=message[:10_000] if message else None,
        prefect_state=state.name,
        skip_reason=skip_reason,
    )


async def mirror_flow_run(
    flow_run: FlowRun, state: State | None = None, *, derive: bool = True
) -> bool:
    """Upsert the run's row; with `derive`, re-derive its job and apply a status change.

    `derive=False` records only: for a state that cannot change the job (Running), and for
    callers that derive each touched job once themselves (the reconciler).

    Returns True when the job's status changed (completed or paused) as a result.
    """
    event = event_for(flow_run, state)
    if event is None:
        return False
    async with session_scope() as session:
        row = await upsert_job_run(session, event)
        if row.tenant_id is None:
            # A row first written without its job (the job was deleted meanwhile).
            from db.models import ScheduledJob

            job = await session.get(ScheduledJob, event.scheduled_job_id)
            row.tenant_id = job.tenant_id if job else None
    if not derive:
        return False
    # The row is committed on its own: nothing the job's derivation does can roll it back.
    return await rederive_job(event.scheduled_job_id)


async def rederive_job(job_id: uuid.UUID) -> bool:
    """Re-derive one job's counters and status (own transaction); apply a change to Prefect.

    Returns True when the job's status changed (completed or paused) as a result.
    """
    async with session_scope() as session:
        derived = await derive_job_state(session, job_id)
    if derived.status_changed_to:
        await apply_job_status(job_id)
        return True
    return False


async def apply_job_status(job_id: uuid.UUID) -> None:
    """Make the job's Prefect deployment match its row, status included (idempotent).

    The same plan and converge the SDK uses (`flows/deployment_sync.py`): `completed` switches
    the schedule off (future runs are deleted by Prefect) and pauses the deployment; `paused`
    pauses the deployment (its schedule stays as it is, so resume restores it exactly).
    """
    # Imported here: only a run that changes its job's status needs the deployment code.
    from flows.deployment_sync import converge_job_status

    await converge_job_status(job_id)


async def _hook(flow: Any, flow_run: FlowRun, state: State) -> None:
    if state.type == StateType.CANCELLING:
        # Only `on_cancellation` hooks get Cancelling, and Prefect 3.9 calls them when the run
        # is being stopped (the worker's cancellation manager after it stopped the process, or
        # the engine), then sets Cancelled, which no hook sees: record the end here, as the
        # reconciler would later, and settle what the run left.
        from prefect.states import Cancelled

        state = Cancelled(message=state.message)
    if state.type == StateType.RUNNING and not was_suspended(flow_run):
        # A first start: the flow body records the run at once, with what a hook cannot know
        # (its slot claim, its name); a second write here would only delay the body. A run
        # back from a pause (approval) is recorded here: its body does not record Running.
        return
    # A hook that cannot reach the database must not break the run: log and let the
    # reconciler heal the row later. Only the error's type is logged — messages from drivers
    # can carry connection details.
    try:
        # Running changes no counter and no status: record it, derive nothing.
        await mirror_flow_run(flow_run, state, derive=state.type in _DERIVING_STATES)
    except Exception as exc:
        logger.error(
            "run mirror: could not record state %s of flow run %s (%s); the reconciler will",
            state.name,
            flow_run.id,
            type(exc).__name__,
        )
    if state.type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        # The run is over: whatever it left pending or claimed is settled now (after a SIGKILL
        # this hook runs in a fresh process the worker starts; the run itself never got to).
        reason = f"the run ended {state.name}" + (f": {state.message}" if state.message else "")
        try:
            await settle_run_work(flow_run.id, reason[:1000])
        except Exception as exc:
            logger.error(
                "could not settle the work of flow run %s (%s); the reconciler will",
                flow_run.id,
                type(exc).__name__,
            )


# Prefect calls worker-side hooks with keyword arguments: the names must be exactly these.
async def on_state_change(flow: Any, flow_run: FlowRun, state: State) -> None:
    """State hook for every state of `run-scheduled-job`: mirror it."""
    await _hook(flow, flow_run, state)
