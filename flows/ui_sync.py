"""Prefect UI → `scheduled_jobs`: what a person does to a job's deployment in the UI is kept.

A job's deployment can be changed in the Prefect UI without ad-scheduler: the pause toggle
(`PATCH /deployments/{id}` with `paused`, or `POST …/pause_deployment`), a schedule's toggle and
its cron/time-zone editor (`PATCH /deployments/{id}/schedules/{schedule_id}`), Delete
(`DELETE /deployments/{id}`), and Quick run / Custom run (`POST …/create_flow_run`). This module
reads those changes back into the job row, with a note that says they came from the UI:

- deployment paused, or the job's schedule switched off or removed → the job is `paused`, its
  `pause_note` says which control and when;
- un-paused / switched on again (after the row was paused) → the job is `active` again;
  a `completed` job cannot run again, so that is undone *and said* (the report's `problems`);
- cron or time zone edited → the row takes the new schedule (checked by `domain.cron`, the same
  code Prefect schedules with); a schedule ad-scheduler cannot run (never fires, not cron) pauses
  the job and its deployment, with a note saying what to fix;
- deployment deleted → the job is deleted (soft: its history stays), with a note;
- a quick or custom run → its `scheduled_job_runs` row appears at once (`pending`, trigger
  `manual`, note "started from the Prefect UI"); the run's own hooks carry it on from there.

**Why polling, not events (measured on Prefect 3.9.1).** The server emits
`prefect.deployment.updated`/`deleted` for `PATCH /deployments/{id}` and deletes, but *nothing*
for `pause_deployment`/`resume_deployment` (an ORM attribute write) nor for any schedule change
(`server/models/deployments.py: update_deployment_schedule` emits no event), which are exactly
the toggles and cron edits the UI makes. So `watch_ui_changes` compares every job's deployment
with its row every `interval` seconds: one `read_deployments` page per 200 jobs, one
`read_flow_runs` for runs not created by a schedule, one query of the rows.

**Who wins.** A difference the app itself is about to resolve is not a UI change:
the SDK changes Prefect first and commits the row after (so every write here is a
compare-and-set on the row's `updated_at`: a row the SDK is changing is left alone); the flows
pause or complete the row first and Prefect after (so "un-paused in Prefect" counts as a UI
resume only when Prefect's change is newer than the row's). `absorb_ui_changes` runs the same
rules inside the SDK's own transaction before every write, so `apply`, `pause`, `update` never
undo a UI change they have not seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterCreatedBy,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from db.models import ScheduledJob, ScheduledJobRun
from db.queries.job_runs import upsert_job_run
from db.session import session_scope
from db.types import utcnow
from domain import cron as cron_rules
from flows.deployment_sync import SCHEDULE_SLUG
from flows.history import event_for

if TYPE_CHECKING:
    from prefect.client.schemas.objects import DeploymentSchedule
    from prefect.client.schemas.responses import DeploymentResponse
    from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger("ad_scheduler.ui_sync")

#: Slug of a job's cron schedule (the one definition is `flows.deployment_sync`).
JOB_SCHEDULE_SLUG = SCHEDULE_SLUG
#: Tags the SDK and the scheduler put on runs they create: any other run of a job's deployment
#: was started by a person in the UI (or straight through the API).
APP_RUN_TAGS = frozenset({"manual", "one-time", "auto-scheduled"})
UI = "in the Prefect UI"
DELETED_EVENT = "prefect.deployment.deleted"
PAGE = 200
DEFAULT_INTERVAL_SECONDS = 2.0
#: What a person sets in the UI (the rest of a sync's values follow from these).
_KEPT_COLUMNS = ("status", "cron_expression", "timezone")


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


@dataclass(frozen=True)
class JobView:
    """What the rules need of a job row (a snapshot: the rules never touch the ORM)."""

    id: uuid.UUID
    name: str
    status: str
    schedule_type: str
    cron: str | None
    timezone: str
    updated_at: datetime | None
    deployment_id: uuid.UUID | None

    @classmethod
    def of(cls, job: ScheduledJob) -> JobView:
        """The snapshot of a row."""
        return cls(
            id=job.id,
            name=job.name,
            status=job.status or "active",
            schedule_type=job.schedule_type,
            cron=job.cron_expression,
            timezone=job.timezone or "UTC",
            updated_at=job.updated_at,
            deployment_id=job.prefect_deployment_id,
        )


@dataclass
class UiSync:
    """What one job's row must become to match what a person did in the UI.

    Attributes:
        values: Column → new value for the `scheduled_jobs` row (empty: nothing to write).
        notes: One line per change, each saying it came from the UI (logged and reported).
        problems: Changes ad-scheduler could not keep, and what it did instead.
        pause_deployment: Pause the deployment too (a schedule the job cannot run).
        stop_schedule: Switch the job's schedule off again (a completed job cannot resume).
        adopt_schedule: A schedule without the job's slug that is now the job's (gets the slug).
    """

    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pause_deployment: bool = False
    stop_schedule: uuid.UUID | None = None
    adopt_schedule: uuid.UUID | None = None

    def warn_if_overridden(self, job: ScheduledJob) -> list[str]:
        """After a write that followed this sync: say (log) each UI change it replaced.

        Returns:
            The warnings logged (empty when the write kept every UI change).
        """
        said = []
        for column, value in self.values.items():
            if column in _KEPT_COLUMNS and getattr(job, column) != value:
                said.append(
                    f"job {job.name!r}: {column} was changed in the Prefect UI to {value!r}; "
                    f"this write sets it to {getattr(job, column)!r}"
                )
        for line in said:
            logger.warning("%s", line)
        return said

    @property
    def changed(self) -> bool:
        """Anything to write or to do in Prefect."""
        return bool(
            self.values or self.pause_deployment or self.stop_schedule or self.adopt_schedule
        )


def _job_schedule(
    deployment: DeploymentResponse,
) -> tuple[DeploymentSchedule | None, list[DeploymentSchedule]]:
    """The job's schedule (by slug; else the only one there is) and every schedule."""
    schedules = list(deployment.schedules or [])
    ours = next((s for s in schedules if s.slug == JOB_SCHEDULE_SLUG), None)
    if ours is None and len(schedules) == 1:
        ours = schedules[0]  # the person deleted the job's schedule and added another
    return ours, schedules


def _prefect_changed_at(deployment: DeploymentResponse, schedule: Any) -> datetime | None:
    stamps = [_aware(deployment.updated)]
    if schedule is not None:
        stamps.append(_aware(getattr(schedule, "updated", None)))
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def plan_ui_sync(
    job: JobView, deployment: DeploymentResponse | None, *, now: datetime | None = None
) -> UiSync:
    """The changes a person made to `job`'s deployment in the UI, as row values and notes.

    Args:
        job: The row as it is now.
        deployment: Its deployment as Prefect has it now (with schedules); None when it no longer
            exists (check with a fresh read first: a listing can miss a deployment just created).
        now: The time written in notes and `deleted_at` (default: now).

    Returns:
        `UiSync`; `changed` is False when the row already matches Prefect.
    """
    now = now or utcnow()
    sync = UiSync()
    if deployment is None:
        sync.values.update(
            deleted_at=now,
            next_run_at=None,
            pause_note=f"Deleted {UI} ({_stamp(now)}); the run history is kept.",
        )
        sync.notes.append(f"job {job.name!r}: its deployment was deleted {UI}")
        return sync

    ours, schedules = _job_schedule(deployment)
    recurring = job.schedule_type == "recurring"
    cron, timezone = job.cron, job.timezone

    # 1. Schedule edits (cron, time zone, another kind of schedule) on a recurring job.
    if recurring and ours is not None:
        if ours.slug != JOB_SCHEDULE_SLUG:
            sync.adopt_schedule = ours.id
        given = ours.schedule
        if not isinstance(given, CronSchedule):
            kind = type(given).__name__.removesuffix("Schedule").lower() or "other"
            return _refuse(
                sync,
                job,
                deployment,
                now,
                f"its schedule was changed {UI} to an {kind} schedule, but ad-scheduler jobs "
                "run on cron; set a cron schedule (in the UI or with `ad-scheduler jobs update`)",
            )
        new_tz = given.timezone or "UTC"
        if (given.cron, new_tz) != (job.cron, job.timezone):
            try:
                new_cron = cron_rules.validate_schedule(given.cron, new_tz)
            except cron_rules.ScheduleError as exc:
                return _refuse(
                    sync,
                    job,
                    deployment,
                    now,
                    f"its schedule was changed {UI} to one it cannot run: {exc}",
                )
            cron, timezone = new_cron, new_tz
            if (cron, timezone) != (job.cron, job.timezone):
                sync.values.update(cron_expression=cron, timezone=timezone)
                sync.notes.append(
                    f"job {job.name!r}: schedule changed {UI} from {job.cron!r} ({job.timezone}) "
                    f"to {cron!r} ({timezone})"
                )
    if recurring and len(schedules) > 1:
        sync.problems.append(
            f"job {job.name!r}: its deployment has {len(schedules)} schedules (added {UI}); "
            f"only the {JOB_SCHEDULE_SLUG!r} schedule is the job's — the others run it too"
        )

    # 2. Pause state: is Prefect scheduling the job's runs?
    if recurring:
        running = not deployment.paused and ours is not None and ours.active
    else:
        running = not deployment.paused
    prefect_newer = _newer(_prefect_changed_at(deployment, ours), _aware(job.updated_at))
    note: str | None = None
    if job.status == "active" and not running:
        if deployment.paused:
            how = "Paused"
        elif ours is None:
            how = "Its schedule was removed"
        else:
            how = "Its schedule was switched off"
        note = f"{how} {UI} ({_stamp(now)})."
        sync.values.update(status="paused", pause_note=note, next_run_at=None)
        sync.notes.append(f"job {job.name!r}: {how.lower()} {UI}")
    elif job.status == "paused" and running and prefect_newer:
        note = f"Resumed {UI} ({_stamp(now)})."
        sync.values.update(status="active", pause_note=note, consecutive_failures=0, resumed_at=now)
        sync.notes.append(f"job {job.name!r}: resumed {UI}")
    elif job.status == "completed" and running and recurring and prefect_newer:
        sync.stop_schedule = ours.id if ours is not None and ours.active else None
        sync.pause_deployment = not deployment.paused
        sync.problems.append(
            f"job {job.name!r} is completed (its max_runs are done): it was resumed {UI}, which "
            "ad-scheduler undid; raise max_runs (`ad-scheduler jobs update --max-runs`) to run "
            "it again"
        )

    status = sync.values.get("status", job.status)
    if "status" in sync.values or "cron_expression" in sync.values:
        sync.values["next_run_at"] = (
            _next_run(cron, timezone, now) if status == "active" and recurring else None
        )
        if status == "active" and not recurring:
            sync.values.pop("next_run_at")  # a one-time job keeps its time
        if "cron_expression" in sync.values and "pause_note" not in sync.values:
            sync.values["pause_note"] = (
                f"Schedule changed {UI} ({_stamp(now)}): was {job.cron!r} in {job.timezone}."
            )
    return sync


def _refuse(
    sync: UiSync, job: JobView, deployment: DeploymentResponse, now: datetime, why: str
) -> UiSync:
    """A UI change the job cannot keep: pause the job and its deployment, saying why (once:
    a job and deployment already paused over it stay as they are)."""
    if job.status != "active" and deployment.paused:
        return UiSync()
    sync.values.update(
        status="paused" if job.status != "completed" else job.status,
        pause_note=f"Paused ({_stamp(now)}): {why}.",
        next_run_at=None,
    )
    sync.pause_deployment = True
    sync.problems.append(f"job {job.name!r}: {why}")
    return sync


def _newer(prefect_at: datetime | None, row_at: datetime | None) -> bool:
    if prefect_at is None or row_at is None:
        return prefect_at is not None
    return prefect_at > row_at


def _next_run(cron: str | None, timezone: str, now: datetime) -> datetime | None:
    if not cron:
        return None
    try:
        return cron_rules.next_fire_time(cron, timezone, after=now)
    except cron_rules.ScheduleError:
        return None


async def _apply_to_prefect(client: PrefectClient, job: JobView, sync: UiSync) -> None:
    if job.deployment_id is None:
        return
    if sync.adopt_schedule is not None:
        await client.update_deployment_schedule(
            job.deployment_id, sync.adopt_schedule, slug=JOB_SCHEDULE_SLUG
        )
    if sync.stop_schedule is not None:
        await client.update_deployment_schedule(job.deployment_id, sync.stop_schedule, active=False)
    if sync.pause_deployment:
        await client.pause_deployment(job.deployment_id)


async def _read_deployment(
    client: PrefectClient, deployment_id: uuid.UUID
) -> DeploymentResponse | None:
    try:
        return await client.read_deployment(deployment_id)
    except ObjectNotFound:
        return None


async def deleted_in_prefect(client: PrefectClient, deployment_id: uuid.UUID) -> bool:
    """Whether Prefect recorded deleting the deployment (a `prefect.deployment.deleted` event).

    A deployment can also be missing because the Prefect server is new or its database was
    reset; only a recorded delete is a person's doing. Events are kept for
    `PREFECT_EVENTS_RETENTION_PERIOD` (7 days by default) and persisted within seconds.
    """
    response = await client._client.post(
        "/events/filter",
        json={
            "filter": {
                "event": {"name": [DELETED_EVENT]},
                "resource": {"id": [f"prefect.deployment.{deployment_id}"]},
            },
            "limit": 1,
        },
    )
    response.raise_for_status()
    return bool(response.json().get("events"))


async def absorb_ui_changes(
    client: PrefectClient, session: AsyncSession, job: ScheduledJob
) -> UiSync:
    """Take what a person changed in the UI into `job` (a row the caller holds, locked).

    For the SDK, before it writes a job: the row then says what Prefect says, so converging the
    deployment to the row keeps a UI pause, resume or schedule edit instead of undoing it. A
    deleted deployment is left to the watcher (the SDK's own `resync` recreates a missing one).

    Returns:
        The `UiSync` that was applied (its `notes` and `problems` say what changed and why).
    """
    if job.prefect_deployment_id is None or job.deleted_at is not None:
        return UiSync()
    deployment = await _read_deployment(client, job.prefect_deployment_id)
    if deployment is None:
        return UiSync()
    view = JobView.of(job)
    sync = plan_ui_sync(view, deployment)
    for name, value in sync.values.items():
        setattr(job, name, value)
    if sync.values:
        await session.flush()
    await _apply_to_prefect(client, view, sync)
    for line in (*sync.notes, *sync.problems):
        logger.warning("%s", line)
    return sync


class UiSyncReport(BaseModel):
    """What one pass took from the UI (all empty on a second pass).

    Attributes:
        jobs_checked: Live jobs with a deployment that were compared.
        jobs_changed: Jobs whose row changed.
        runs_recorded: Runs started in the UI whose row was created.
        notes: One line per change taken from the UI.
        problems: UI changes that could not be kept, and what was done instead; rows that
            could not be handled (the others were).
    """

    jobs_checked: int = 0
    jobs_changed: int = 0
    runs_recorded: int = 0
    notes: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


async def _live_jobs(
    database_url: str | None, job_ids: Sequence[uuid.UUID] | None
) -> list[ScheduledJob]:
    stmt = sa.select(ScheduledJob).where(
        ScheduledJob.deleted_at.is_(None), ScheduledJob.prefect_deployment_id.is_not(None)
    )
    if job_ids is not None:
        stmt = stmt.where(ScheduledJob.id.in_(list(job_ids)))
    async with session_scope(database_url) as session:
        return list((await session.scalars(stmt)).all())


async def _deployments(
    client: PrefectClient, ids: list[uuid.UUID]
) -> dict[uuid.UUID, DeploymentResponse]:
    found: dict[uuid.UUID, DeploymentResponse] = {}
    for start in range(0, len(ids), PAGE):
        chunk = ids[start : start + PAGE]
        page = await client.read_deployments(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=chunk)), limit=PAGE
        )
        found.update((d.id, d) for d in page)
    return found


async def _write_row(database_url: str | None, job: JobView, sync: UiSync) -> bool:
    """Compare-and-set: write only if the row is still the one the plan was made from."""
    async with session_scope(database_url) as session:
        stmt = (
            sa.update(ScheduledJob)
            .where(ScheduledJob.id == job.id, ScheduledJob.deleted_at.is_(None))
            .values(**sync.values, updated_at=utcnow())
        )
        if job.updated_at is not None:
            stmt = stmt.where(ScheduledJob.updated_at == job.updated_at)
        result = await session.execute(stmt.execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0))


async def _ui_runs(
    client: PrefectClient, by_deployment: dict[uuid.UUID, ScheduledJob]
) -> list[tuple[FlowRun, ScheduledJob]]:
    """Runs of the jobs' deployments, not yet started, that no schedule and no SDK created."""
    runs: list[FlowRun] = []
    ids = list(by_deployment)
    for start in range(0, len(ids), PAGE):
        offset = 0
        while True:
            page = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=ids[start : start + PAGE]),
                    # The scheduler's runs carry `created_by` SCHEDULE; people's runs none.
                    created_by=FlowRunFilterCreatedBy(is_null_=True),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(
                            any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
                        )
                    ),
                ),
                limit=PAGE,
                offset=offset,
            )
            runs.extend(page)
            if len(page) < PAGE:
                break
            offset += PAGE
    found = []
    for run in runs:
        if run.auto_scheduled or APP_RUN_TAGS & set(run.tags or ()):
            continue
        job = by_deployment.get(run.deployment_id) if run.deployment_id else None
        if job is not None and (run.parameters or {}).get("job_id") == str(job.id):
            found.append((run, job))
    return found


def ui_run_note(run: FlowRun, now: datetime | None = None) -> str:
    """The note of a run a person started in the UI (quick run, or custom run for later)."""
    now = now or utcnow()
    when = _aware(run.expected_start_time)
    if when is not None and when > now + timedelta(seconds=30):
        return f"Started {UI} (custom run, scheduled for {_stamp(when)})."
    return f"Started {UI}."


async def _record_ui_runs(
    client: PrefectClient,
    database_url: str | None,
    jobs: Iterable[ScheduledJob],
    report: UiSyncReport,
) -> None:
    by_deployment = {j.prefect_deployment_id: j for j in jobs if j.prefect_deployment_id}
    if not by_deployment:
        return
    candidates = await _ui_runs(client, by_deployment)
    if not candidates:
        return
    async with session_scope(database_url) as session:
        known = set(
            (
                await session.scalars(
                    sa.select(ScheduledJobRun.flow_run_id).where(
                        ScheduledJobRun.flow_run_id.in_([r.id for r, _ in candidates])
                    )
                )
            ).all()
        )
    for run, job in candidates:
        if run.id in known:
            continue
        event = event_for(run)
        if event is None:
            continue
        event = event.model_copy(
            update={"logs": ui_run_note(run), "tenant_id": job.tenant_id, "trigger": "manual"}
        )
        async with session_scope(database_url) as session:
            await upsert_job_run(session, event)
        report.runs_recorded += 1
        report.notes.append(f"job {job.name!r}: run {run.name} started {UI}")


async def sync_ui_changes(
    *,
    database_url: str | None = None,
    job_ids: Sequence[uuid.UUID] | None = None,
    client: PrefectClient | None = None,
) -> UiSyncReport:
    """One pass: compare every live job with its deployment and take what changed in the UI.

    Idempotent (a second pass finds nothing), and each job is handled on its own: one that
    fails is named in `problems`, the others proceed.

    Args:
        database_url: The application database (default: settings / `DATABASE_URL`).
        job_ids: Only these jobs (default: every live job with a deployment, every tenant).
        client: A Prefect client to reuse (default: a new one for this pass).
    """
    if client is None:
        async with get_client() as own:
            return await sync_ui_changes(database_url=database_url, job_ids=job_ids, client=own)
    report = UiSyncReport()
    jobs = await _live_jobs(database_url, job_ids)
    report.jobs_checked = len(jobs)
    deployments = await _deployments(
        client, [j.prefect_deployment_id for j in jobs if j.prefect_deployment_id]
    )
    for job in jobs:
        view = JobView.of(job)
        try:
            assert view.deployment_id is not None
            deployment = deployments.get(view.deployment_id)
            if deployment is None:
                # Missing from the listing: make sure (a read by id) before calling it deleted.
                deployment = await _read_deployment(client, view.deployment_id)
            if deployment is None and not await deleted_in_prefect(client, view.deployment_id):
                # Gone without a delete (a new or wiped Prefect server): not a person's doing,
                # so the job stays; `resync` recreates its deployment.
                report.problems.append(
                    f"job {view.name!r}: its deployment {view.deployment_id} is not on this "
                    "Prefect server and was not deleted there; run `ad-scheduler jobs resync` "
                    "(or the SDK's `resync`) to recreate it"
                )
                continue
            sync = plan_ui_sync(view, deployment)
            if not sync.changed:
                continue
            if sync.values and not await _write_row(database_url, view, sync):
                continue  # the row changed meanwhile (the SDK is writing it): next pass
            await _apply_to_prefect(client, view, sync)
        except Exception as exc:
            report.problems.append(f"job {view.name!r}: {type(exc).__name__}: {exc}"[:500])
            continue
        report.jobs_changed += 1 if sync.values else 0
        report.notes.extend(sync.notes)
        report.problems.extend(sync.problems)
    try:
        await _record_ui_runs(client, database_url, jobs, report)
    except Exception as exc:
        report.problems.append(f"runs started in the UI: {type(exc).__name__}: {exc}"[:500])
    return report


async def watch_ui_changes(
    *,
    interval: float = DEFAULT_INTERVAL_SECONDS,
    duration: float | None = None,
    database_url: str | None = None,
    stop: asyncio.Event | None = None,
) -> UiSyncReport:
    """Run `sync_ui_changes` every `interval` seconds until `stop` is set or `duration` ends.

    A failed pass (Prefect or the database briefly unreachable) is logged and the next pass
    runs as usual. Returns everything the passes took from the UI, added up.
    """
    total = UiSyncReport()
    seen_problems: set[str] = set()
    stop = stop or asyncio.Event()
    deadline = time.monotonic() + duration if duration is not None else None
    async with get_client() as client:
        while not stop.is_set():
            try:
                report = await sync_ui_changes(database_url=database_url, client=client)
            except Exception as exc:
                logger.error("UI sync pass failed (%s); retrying", type(exc).__name__)
            else:
                for line in report.notes:
                    logger.info("%s", line)
                for line in report.problems:
                    if line not in seen_problems:  # a lasting problem is said once
                        seen_problems.add(line)
                        logger.warning("%s", line)
                        total.problems.append(line)
                total.jobs_checked = report.jobs_checked
                total.jobs_changed += report.jobs_changed
                total.runs_recorded += report.runs_recorded
                total.notes.extend(report.notes)
            if deadline is not None and time.monotonic() >= deadline:
                break
            wait = interval if deadline is None else min(interval, deadline - time.monotonic())
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0))
            except TimeoutError:
                pass
    return total


@flow(name="sync-ui-changes", log_prints=False)
async def sync_ui_changes_flow(
    duration_seconds: int = 590,
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
) -> UiSyncReport:
    """Watch the job deployments for changes made in the Prefect UI, for `duration_seconds`
    (passes every `interval_seconds`, at least 0.5).

    Deployed on a 10-minute interval with a concurrency limit of 1 (prefect.yaml), so one
    watcher is always running; `ad-scheduler up` can run `watch_ui_changes` in-process instead.
    """
    run_logger = get_run_logger()
    report = await watch_ui_changes(
        interval=max(interval_seconds, 0.5), duration=max(duration_seconds, 0)
    )
    for line in report.notes:
        run_logger.info("%s", line)
    for line in report.problems:
        run_logger.warning("%s", line)
    return report


__all__ = [
    "JOB_SCHEDULE_SLUG",
    "JobView",
    "UiSync",
    "UiSyncReport",
    "absorb_ui_changes",
    "plan_ui_sync",
    "sync_ui_changes",
    "sync_ui_changes_flow",
    "ui_run_note",
    "watch_ui_changes",
]
