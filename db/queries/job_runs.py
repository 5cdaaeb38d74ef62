"""The run mirror (`scheduled_job_runs`) and the job counters derived from it.

State hooks and the reconciler both report what they know about a flow run as a `JobRunEvent`;
`upsert_job_run` folds it into the run's row, keyed by `flow_run_id`:

- idempotent: the same event twice leaves one row with the same content;
- monotonic: statuses only move forward (pending → running → a terminal status); a late
  `running` never overwrites `completed`/`failed`, and a terminal row only has its gaps filled.

Job counters (`runs_completed`, `consecutive_failures`, `last_run_at`, `next_run_at`, and the
automatic `completed`/`paused` transitions) are never incremented in place: `derive_job_state`
recomputes them from the history, so replaying events or running the reconciler twice changes
nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import NotFoundError
from db.models import Brand, Product, ScheduledJob, ScheduledJobRun
from db.queries import dialect_insert
from db.types import utcnow
from domain import cron as cron_rules
from domain import job_rules
from domain.vocab import TERMINAL_RUN_STATUSES, RunStatus, RunTrigger

# approval hook: a run awaiting approval is as far along as a running one (not terminal): it
# may go back to running when it resumes, and on to a terminal status.
_RANK = {"pending": 0, "running": 1, "awaiting_approval": 1}
TERMINAL_RANK = 2

#: The run fields an event may carry (everything but the key and the status).
_EVENT_FIELDS = (
    "scheduled_job_id",
    "tenant_id",
    "flow_run_name",
    "scheduled_for",
    "trigger",
    "started_at",
    "completed_at",
    "error_message",
    "ad_run_ids",
    "templates_used",
    "logs",
    "prefect_state",
    "skip_reason",
)


_SET_ONCE = ("trigger", "flow_run_name")


def status_rank(status: str | None) -> int:
    """Order of statuses: pending < running < any terminal status."""
    return _RANK.get(status or "pending", TERMINAL_RANK)


class JobRunEvent(BaseModel):
    """What a hook or the reconciler learned about one flow run of a job."""

    model_config = ConfigDict(frozen=True)

    flow_run_id: uuid.UUID
    scheduled_job_id: uuid.UUID
    status: RunStatus
    tenant_id: uuid.UUID | None = None
    flow_run_name: str | None = None
    scheduled_for: datetime | None = None
    trigger: RunTrigger | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = Field(default=None, max_length=10_000)
    ad_run_ids: list[uuid.UUID] | None = None
    templates_used: list[str] | None = None
    logs: str | None = None
    prefect_state: str | None = None
    skip_reason: str | None = None


async def upsert_job_run(session: AsyncSession, event: JobRunEvent) -> ScheduledJobRun:
    """Fold `event` into the row of its flow run (created on first sight); returns the row."""
    # One round trip on first sight: the inserted row comes back whole (nothing on a conflict).
    inserted = await _insert_run(session, event)
    if inserted is not None:
        return inserted
    return await _fold_into_row(session, event)


async def start_job_run(session: AsyncSession, event: JobRunEvent) -> tuple[ScheduledJobRun, bool]:
    """Record a run's start (`upsert_job_run`) and claim its schedule slot; returns the row and
    whether the run owns its slot (always True for a run without a scheduled slot).

    A scheduled run seen first here (the usual case) is inserted with its slot in one
    statement; a row a hook made first, or a slot another run holds, takes the longer way
    (`claim_schedule_slot`), with the same outcome.
    """
    key = (
        schedule_slot_key(event.scheduled_job_id, event.scheduled_for)
        if event.trigger == "schedule" and event.scheduled_for is not None
        else None
    )
    if key is not None:
        # Nothing on a conflict with either key: the flow run's row exists, or another run
        # of the same slot holds it; both are sorted out below.
        inserted = await _insert_run(session, event, slot_key=key)
        if inserted is not None:
            return inserted, True
    row = await upsert_job_run(session, event)
    return row, key is None or await claim_schedule_slot(session, row)


async def record_run_summary(
    session: AsyncSession, job_run_id: uuid.UUID, event: JobRunEvent
) -> None:
    """Fold a running run's summary (`event`, status running) into its row, `job_run_id`.

    One `UPDATE` while the row is running (what a summary written by the run itself finds);
    any other row (a hook or the reconciler got there first) is folded by `upsert_job_run`'s
    rules.
    """
    values = {
        f: getattr(event, f)
        for f in _EVENT_FIELDS
        if getattr(event, f) is not None and f not in (*_SET_ONCE, "tenant_id", "scheduled_job_id")
    }
    updated = await session.execute(
        sa.update(ScheduledJobRun)
        .where(ScheduledJobRun.id == job_run_id, ScheduledJobRun.status == event.status)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], updated).rowcount != 1:
        await upsert_job_run(session, event)


async def _insert_run(
    session: AsyncSession, event: JobRunEvent, *, slot_key: str | None = None
) -> ScheduledJobRun | None:
    """Insert the event's row; None when its flow run has one (or, given `slot_key`, when
    another run holds that slot)."""
    values = {f: getattr(event, f) for f in _EVENT_FIELDS if getattr(event, f) is not None}
    values.setdefault("trigger", "schedule")
    insert = dialect_insert(session)
    now = utcnow()
    # A hook does not know the tenant: the new row takes its job's, in the same statement.
    tenant = values.pop("tenant_id", None) or (
        sa.select(ScheduledJob.tenant_id)
        .where(ScheduledJob.id == event.scheduled_job_id)
        .scalar_subquery()
    )
    statement = insert(ScheduledJobRun).values(
        id=uuid.uuid4(),
        flow_run_id=event.flow_run_id,
        status=event.status,
        created_at=now,
        updated_at=now,
        tenant_id=tenant,
        **values,
    )
    if slot_key is not None:
        statement = statement.values(slot_key=slot_key).on_conflict_do_nothing()
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["flow_run_id"])
    return (
        await session.scalars(
            statement.returning(ScheduledJobRun),
            execution_options={"populate_existing": True},
        )
    ).one_or_none()


async def _fold_into_row(session: AsyncSession, event: JobRunEvent) -> ScheduledJobRun:
    """`upsert_job_run` for a flow run whose row exists: the monotonic fold, under a row lock."""
    values = {f: getattr(event, f) for f in _EVENT_FIELDS if getattr(event, f) is not None}
    values.setdefault("trigger", "schedule")
    query = sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == event.flow_run_id)
    row = (await session.scalars(query.with_for_update())).one()
    new_rank, old_rank = status_rank(event.status), status_rank(row.status)
    advances = new_rank > old_rank or (new_rank == old_rank and new_rank < TERMINAL_RANK)
    if advances:
        row.status = event.status
        for name, value in values.items():
            # The trigger and the run's name are set once: hooks carry the name the run
            # started with, while the flow renames itself after it loaded its job.
            if name not in _SET_ONCE or getattr(row, name) is None:
                setattr(row, name, value)
    else:
        for name, value in values.items():
            if getattr(row, name) is None:
                setattr(row, name, value)
    await session.flush()
    return row


def schedule_slot_key(job_id: uuid.UUID, scheduled_for: datetime) -> str:
    """The schedule slot a run of `job_id` due at `scheduled_for` claims: "<job id>:<time>"."""
    return f"{job_id}:{scheduled_for.isoformat()}"


async def claim_schedule_slot(session: AsyncSession, run: ScheduledJobRun) -> bool:
    """Make `run` the owner of its job's schedule slot; False if another run already owns it.

    The slot is "<job id>:<scheduled time>", unique in the table, so of two runs created for the
    same scheduled time (a redeploy, a duplicated trigger) exactly one proceeds.
    """
    if run.scheduled_for is None:
        return True
    key = schedule_slot_key(run.scheduled_job_id, run.scheduled_for)
    if run.slot_key == key:
        return True
    try:
        async with session.begin_nested():
            await session.execute(
                sa.update(ScheduledJobRun).where(ScheduledJobRun.id == run.id).values(slot_key=key)
            )
    except sa.exc.IntegrityError:
        return False
    run.slot_key = key
    return True


@dataclass(frozen=True)
class JobState:
    """Counters and status derived from a job's run history.

    Attributes:
        status_changed_to: "completed" or "paused" when this derivation changed the status.
        deactivate_schedule: True when the Prefect schedule must be switched off.
        schedule_problem: Why `next_run_at` could not be computed (a cron or time zone that
            Prefect rejects), else None.
    """

    runs_completed: int
    consecutive_failures: int
    last_run_at: datetime | None
    next_run_at: datetime | None
    status: str
    status_changed_to: str | None
    deactivate_schedule: bool
    schedule_problem: str | None = None


async def derive_job_state(
    session: AsyncSession, job_id: uuid.UUID, *, now: datetime | None = None
) -> JobState:
    """Recompute a job's counters and automatic status from its history, and store them.

    - `runs_completed`: completed *scheduled* runs (manual runs are recorded, not counted);
    - `consecutive_failures`: failed scheduled runs since the last completed one (or since the
      job was last resumed), skipped and cancelled runs neither count nor break the streak;
    - at `max_runs`, or after a one-time job's run, the job becomes `completed`;
    - at `max_consecutive_failures` an active job pauses itself with a note saying why.
    """
    now = now or utcnow()
    job = await session.get(ScheduledJob, job_id, with_for_update=True)
    if job is None:
        raise NotFoundError("scheduled job", job_id)
    runs = ScheduledJobRun
    scheduled = runs.trigger == "schedule"
    # The three aggregates in one statement (FILTER: PostgreSQL, and SQLite since 3.30).
    completed, last_run_at, any_scheduled_ended = (
        await session.execute(
            sa.select(
                # approval hook: a run awaiting approval made its ads and counts already, so slow
                # decisions never let a job generate more than max_runs runs.
                sa.func.count().filter(
                    scheduled, runs.status.in_(("completed", "awaiting_approval"))
                ),
                sa.func.max(runs.started_at),
                sa.func.count().filter(scheduled, runs.status.in_(TERMINAL_RUN_STATUSES)),
            ).where(runs.scheduled_job_id == job_id)
        )
    ).one()
    order_key = sa.func.coalesce(runs.scheduled_for, runs.started_at, runs.created_at)
    recent = (
        await session.execute(
            sa.select(runs.status, runs.error_message, order_key.label("at"))
            .where(
                runs.scheduled_job_id == job_id,
                runs.trigger == "schedule",
                runs.status.in_(job_rules.STREAK_STATUSES),
            )
            .order_by(order_key.desc())
            .limit(max(job.max_consecutive_failures, 1) + 1)
        )
    ).all()
    streak = job_rules.failure_streak(
        (job_rules.RunOutcome(row.status, row.error_message, row.at) for row in recent),
        resumed_at=job.resumed_at,
    )

    status = job.status or "active"
    changed_to = job_rules.automatic_status(
        status=status,
        max_runs=job.max_runs,
        runs_completed=completed or 0,
        one_time=job.schedule_type == "one_time",
        scheduled_run_ended=bool(any_scheduled_ended),
        streak=streak,
        max_consecutive_failures=job.max_consecutive_failures,
    )
    if changed_to == "paused":
        job.pause_note = job_rules.pause_note(streak)
    if changed_to:
        status = job.status = changed_to

    next_run_at: datetime | None = None
    schedule_problem: str | None = None
    if status == "active" and job.deleted_at is None:
        if job.schedule_type == "recurring" and job.cron_expression:
            try:
                next_run_at = cron_rules.next_fire_time(
                    job.cron_expression, job.timezone, after=now
                )
            except ValueError as exc:
                # A row Prefect cannot schedule (written by hand, or adopted): its counters are
                # still derived; the problem is reported, not raised over its history.
                schedule_problem = (
                    f"cron {job.cron_expression!r} in time zone {job.timezone!r} is not "
                    f"schedulable: {_first_line(exc)}"
                )
        elif job.schedule_type == "one_time" and not any_scheduled_ended:
            next_run_at = job.scheduled_at

    job.runs_completed = completed or 0
    job.consecutive_failures = streak.count
    job.last_run_at = last_run_at
    job.next_run_at = next_run_at
    await session.flush()
    return JobState(
        runs_completed=job.runs_completed,
        consecutive_failures=streak.count,
        last_run_at=last_run_at,
        next_run_at=next_run_at,
        status=status,
        status_changed_to=changed_to,
        deactivate_schedule=status in ("completed", "paused") and changed_to is not None,
        schedule_problem=schedule_problem,
    )


def _first_line(exc: Exception) -> str:
    """The useful line of a pydantic error ("Value error, Invalid cron string: …")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if line.lower().startswith("value error")]
    line = (useful or lines or [type(exc).__name__])[0]
    line = line.split(" [type=", 1)[0]
    return line.removeprefix("Value error, ")[:300]


async def latest_runs(
    session: AsyncSession, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, ScheduledJobRun]:
    """Each job's most recent run (by scheduled time, else creation), for listings."""
    if not job_ids:
        return {}
    runs = ScheduledJobRun
    at = sa.func.coalesce(runs.scheduled_for, runs.created_at)
    newest = (
        sa.select(
            runs.id,
            sa.func.row_number()
            .over(partition_by=runs.scheduled_job_id, order_by=(at.desc(), runs.created_at.desc()))
            .label("n"),
        )
        .where(runs.scheduled_job_id.in_(job_ids))
        .subquery()
    )
    rows = await session.scalars(
        sa.select(runs).join(newest, newest.c.id == runs.id).where(newest.c.n == 1)
    )
    return {r.scheduled_job_id: r for r in rows.all()}


@dataclass(frozen=True)
class JobWithNames:
    """A job row with the names its deployment's description shows."""

    job: ScheduledJob
    product_name: str
    brand_name: str


async def job_with_names(session: AsyncSession, job_id: uuid.UUID) -> JobWithNames | None:
    """The job (deleted or not) and its product's and brand's names, one query; None if absent."""
    found = (
        await session.execute(
            sa.select(ScheduledJob, Product.name, Brand.name)
            .outerjoin(Product, Product.id == ScheduledJob.product_id)
            .outerjoin(Brand, Brand.id == Product.brand_id)
            .where(ScheduledJob.id == job_id)
        )
    ).one_or_none()
    if found is None:
        return None
    job, product_name, brand_name = found
    return JobWithNames(job=job, product_name=product_name or "?", brand_name=brand_name or "?")
