"""`run_scheduled_job`: the flow every job's deployment points at.

One run: load the job (once) → skip a misfire or a duplicate slot (recorded, not run stale) →
`select-templates` for the job's template mode → one `generate-ad-run` per template, concurrently
and under the provider limit, each followed by `record-template-usage` → export → finish
Completed; Completed named "Exports failed" when exports failed (the ads stay and count); or
Failed naming the failed templates when no template made ads. Its state hooks mirror every
state into `scheduled_job_runs` (Running is recorded; a final state also re-derives the job's
counters and `next_run_at` from that history).
"""

from __future__ import annotations

import gc

# The imports below make ~100,000 objects. With the collector on, every 25 % of growth of what
# it tracks sets off a full collection of everything loaded so far, Prefect included: ~0.12 CPU-s
# of a flow-run process here, a tenth of its start. It is off while they load and back on at the
# end of this module, once what they made is frozen out of its sight (`prepare_flow_process`).
_COLLECTING = gc.isenabled()
gc.disable()

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, timedelta, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.context import get_run_context
from prefect.logging import get_logger
from prefect.logging.loggers import flow_run_logger
from prefect.settings import get_current_settings
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from blocks.generators.base import AdGenerator, ProductBrief
from config import get_settings
from db.errors import NotFoundError, TemplatesExhaustedError
from db.models import Product, ScheduledJob, ScheduledJobRun
from db.queries.job_runs import JobRunEvent, record_run_summary, start_job_run, upsert_job_run
from db.session import dispose_engines, prepare_process, retry_transaction, session_scope
from db.types import utcnow
from domain.misfire import is_misfire
from domain.params import JobParameters
from domain.tags import generator_from_tags
from domain.vocab import SCHEDULED_JOB_FLOW
from flows.artifacts import prepare_run_artifact, run_artifact_published, run_artifact_started
from flows.history import (
    EXPORTS_FAILED_STATE_NAME,
    SKIPPED_STATE_NAME,
    on_state_change,
    run_trigger,
    scheduled_time,
    was_suspended,
)
from flows.job_board import refresh_board_after_run
from flows.limits import ProviderSlots, slots_handed_back
from flows.pipeline import (
    AdRunOutcome,
    PipelineResult,
    RunInputs,
    RunPlan,
    TemplateChoice,
    load_generator,
    load_run_inputs,
    make_ads,
    provider_slots_ahead,
    read_brief,
    rename_flow_run,
    select_templates,
)
from flows.run_recovery import settle_after


class JobRunSummary(BaseModel):
    """What one run of a job did (the flow's return value)."""

    job_id: uuid.UUID
    templates: list[str]
    ad_run_ids: list[uuid.UUID]
    ads: int
    failed_templates: list[str]


async def _record(event: JobRunEvent) -> uuid.UUID:
    # Retried whole through a brief database outage: the upsert is idempotent and monotonic.
    async def upsert(session: AsyncSession) -> uuid.UUID:
        return (await upsert_job_run(session, event)).id

    return await retry_transaction(upsert, what="run record")


async def _record_summary(job_run_id: uuid.UUID, event: JobRunEvent) -> None:
    # The run's own row, running: one statement (`record_run_summary`), retried like `_record`.
    async def update(session: AsyncSession) -> None:
        await record_run_summary(session, job_run_id, event)

    await retry_transaction(update, what="run record")


async def _skip(job: ScheduledJob, flow_run_id: uuid.UUID, reason: str, message: str) -> State:
    get_run_logger().warning("skipping run: %s", message)
    await _record(
        JobRunEvent(
            flow_run_id=flow_run_id,
            scheduled_job_id=job.id,
            tenant_id=job.tenant_id,
            status="skipped",
            skip_reason=reason,
            completed_at=utcnow(),
            logs=message,
            prefect_state=SKIPPED_STATE_NAME,
        )
    )
    return Completed(name=SKIPPED_STATE_NAME, message=message)


# Prefect calls hooks with keyword arguments: the names must be exactly these.
async def release_connections(flow: object, flow_run: FlowRun, state: object) -> None:
    """Last hook of a final state: close this loop's database connections.

    A flow process must hold no connection once its run has ended, whatever keeps the
    interpreter alive afterwards (one once lingered 20+ minutes holding two). Reads its Running
    hook started for a body that never ran (`run_started`) are stopped first.
    """
    reads = _early_reads.pop(flow_run.id, None)
    if reads is not None:
        await reads.settle()
    await dispose_engines()


async def provider_slots_returned(flow: object, flow_run: object, state: object) -> None:
    """Final-state step: wait for the run's provider slots, handed back after its body
    (`_slots_for`) while its final state was being set. Never raises."""
    await slots_handed_back()


#: What a final state sets off, in order (`finish_run`).
_FINAL_STEPS: list[Callable[..., Awaitable[None]]] = [
    run_artifact_started,
    on_state_change,
    refresh_board_after_run,
    run_artifact_published,
    provider_slots_returned,
    release_connections,
]


async def finish_run(flow: Any, flow_run: FlowRun, state: State) -> None:
    """The one hook of every final state: `_FINAL_STEPS` in order, each whatever the one
    before did (a step that raises is logged with its traceback, as Prefect logs a failed hook).

    One hook, not five: Prefect writes two lines to the run's log per hook it calls ("Running
    hook …", "Hook … finished running successfully"), which were ten of a run's log lines.
    """
    for step in _FINAL_STEPS:
        try:
            await step(flow=flow, flow_run=flow_run, state=state)
        except Exception:
            flow_run_logger(flow_run, flow).error(
                "the final-state step %s failed", step.__name__, exc_info=True
            )


@dataclass(frozen=True)
class _RunStart:
    """A first start's record (`start_job_run`): the run's row and whether it owns its slot."""

    job_run_id: uuid.UUID
    owns_slot: bool


@dataclass(frozen=True)
class _FirstRead:
    """The job row (None: no such job), its product brief (None: no such product), its
    parameters (None: missing job or parameters that do not validate) and, for a first start of
    a job that exists with valid parameters, the run's start as recorded (else None)."""

    job: ScheduledJob | None
    brief: tuple[ProductBrief, Product] | None
    params: JobParameters | None
    start: _RunStart | None


@dataclass
class _EarlyReads:
    """A run's first reads, started by its Running hook (`run_started`) for its body."""

    #: The job, its brief and the run's recorded start, in one transaction (`_first_read`).
    job: asyncio.Future[_FirstRead]
    #: The generator block the deployment's tag names (`domain.tags`), loading; None if none.
    hinted: str | None
    generator: asyncio.Future[AdGenerator] | None

    @classmethod
    def start(cls, job_id: uuid.UUID, flow_run: FlowRun) -> _EarlyReads:
        """Send the reads now (futures on the running loop)."""
        hinted = generator_from_tags(flow_run.tags or ())
        return cls(
            job=asyncio.ensure_future(_first_read(job_id, flow_run)),
            hinted=hinted,
            generator=asyncio.ensure_future(load_generator(hinted)) if hinted else None,
        )

    async def settle(self) -> None:
        """Stop what is still loading and wait for it (a result nobody took is dropped)."""
        pending = [f for f in (self.job, self.generator) if f is not None]
        for future in pending:
            if not future.done():
                future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


#: Reads started by a run's Running hook and not yet taken by its body, by flow run.
_early_reads: dict[uuid.UUID, _EarlyReads] = {}


def _run_name(job: ScheduledJob, flow_run: FlowRun) -> str:
    """The name the run takes (`rename_flow_run`) and records: the job's name and the minute
    it was scheduled for, in the job's time zone ("Spring sale · 2026-12-02 09:00 CET")."""
    when = (scheduled_time(flow_run) or utcnow()).astimezone(_zone(job.timezone))
    return f"{job.name} · {when:%Y-%m-%d %H:%M %Z}"


async def _first_read(job_id: uuid.UUID, flow_run: FlowRun) -> _FirstRead:
    """The job, its product brief and, for a first start, the run's start (`start_job_run`), in
    one transaction: the run's first round trips, on one connection.

    A run back from its approval (`was_suspended`) is recorded by its hooks, not here. Nor is
    a run of a job whose parameters do not validate: its body fails on them before anything is
    recorded, and it must not take its schedule slot from a later run of that slot.
    """
    brief: tuple[ProductBrief, Product] | None = None
    params: JobParameters | None = None
    start: _RunStart | None = None
    async with session_scope() as session:
        job = await session.get(ScheduledJob, job_id)
        if job is not None and job.deleted_at is None:
            with contextlib.suppress(ValueError):  # no such product: the inputs raise it below
                brief = await read_brief(session, job.tenant_id, job.product_id)
            with contextlib.suppress(ValidationError):  # the body raises it, as it validates
                params = JobParameters.model_validate(job.parameters)
            if params is not None and not was_suspended(flow_run):
                start = await _start_in(session, job, flow_run)
    return _FirstRead(job=job, brief=brief, params=params, start=start)


async def _start_in(session: AsyncSession, job: ScheduledJob, flow_run: FlowRun) -> _RunStart:
    """The run's row from its start, with what the hooks cannot know, owning its slot."""
    name = _run_name(job, flow_run)
    row, owns_slot = await start_job_run(
        session,
        JobRunEvent(
            flow_run_id=flow_run.id,
            scheduled_job_id=job.id,
            tenant_id=job.tenant_id,
            status="running",
            trigger=run_trigger(flow_run),
            scheduled_for=scheduled_time(flow_run),
            started_at=utcnow(),
            flow_run_name=name,
        ),
    )
    # Set once by the insert: a row a hook made first carries the name the run started with
    # (no UPDATE when the names agree, as on a first start).
    row.flow_run_name = name
    return _RunStart(job_run_id=row.id, owns_slot=owns_slot)


async def _record_start(job: ScheduledJob, flow_run: FlowRun) -> _RunStart:
    """Record the run's start (`start_job_run`) in its own transaction."""
    async with session_scope() as session:
        return await _start_in(session, job, flow_run)


# Prefect calls hooks with keyword arguments: the names must be exactly these.
async def run_started(flow: Any, flow_run: FlowRun, state: State) -> None:
    """The Running hook: start the run's first reads, then mirror the state (`on_state_change`).

    Prefect calls it as soon as the run is Running, before its engine reads the run back and
    sets up its context (~50-90 ms here, a round trip and the engine's own work): the job and
    product read (with the process's first database connection, ~20 ms) and the generator
    block's read go out now and overlap it; the body takes them (`_early_reads`). Never raises:
    a read not started here is started by the body.
    """
    try:
        job_id = uuid.UUID(str((flow_run.parameters or {})["job_id"]))
        if flow_run.id not in _early_reads:
            _early_reads[flow_run.id] = _EarlyReads.start(job_id, flow_run)
    except Exception as exc:  # an optimisation only
        get_logger("ad_scheduler.flows").debug("run reads not started early: %s", exc)
    await on_state_change(flow=flow, flow_run=flow_run, state=state)


#: Where Prefect would keep the run's result: nothing is kept (`persist_result=False`: the run's
#: record is `scheduled_job_runs`), but without a storage named here Prefect asks the server for
#: its default one at every run's start, twice (`GET /api/admin/storage`, once through a sync
#: client made for it: ~20 ms of the run's start-up here, the event loop blocked for half).
_RESULT_STORAGE = get_current_settings().results.local_storage_path


@flow(
    name=SCHEDULED_JOB_FLOW,
    log_prints=False,
    persist_result=False,
    result_storage=_RESULT_STORAGE,
    # Every state reaches the mirror (a first Running through the body, which records the run
    # at once); the reconciler covers the states no hook sees. The Running hook also starts the
    # run's first reads (`run_started`).
    on_running=[run_started],
    # The run's artifact goes out once the final state is set (not beside it: see
    # `prepare_run_artifact`), while the state is mirrored and the board refreshed; it is waited
    # for before the run's connections go back (see release_connections).
    on_completion=[finish_run],
    on_failure=[finish_run],
    on_crashed=[finish_run],
    on_cancellation=[finish_run],
)
async def run_scheduled_job(job_id: uuid.UUID) -> JobRunSummary | State:
    """Run one scheduled ad job.

    Args:
        job_id: The `scheduled_jobs` row this deployment belongs to.

    Returns:
        A summary of the ads made, or a Skipped/Failed state saying why.
    """
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    assert flow_run is not None
    # The job read and the generator block's (the one the deployment's tag names, loaded beside
    # the job read: its import and its API read overlap the database round trips) were started
    # by the Running hook (from the run's own parameters: this `job_id`); a run whose hook did
    # not start them starts them now.
    reads = _early_reads.pop(flow_run.id, None) or _EarlyReads.start(job_id, flow_run)
    try:
        return await _load_and_run(job_id, flow_run, reads)
    finally:
        await reads.settle()


async def _load_and_run(
    job_id: uuid.UUID, flow_run: FlowRun, reads: _EarlyReads
) -> JobRunSummary | State:
    """Take the job (and its product brief), then run it (or resume its decided approval)."""
    first = await reads.job
    job, brief = first.job, first.brief
    if job is None or job.deleted_at is not None:
        raise NotFoundError("scheduled job", job_id)
    # Validated by the first read; parameters that do not validate raise here, as they did.
    params = first.params or JobParameters.model_validate(job.parameters)
    # approval hook: a run back from its approval only settles the decision and exports. The
    # approval module loads only for the runs that use it (this one, and a run that suspends).
    if was_suspended(flow_run):
        from flows.approval import resume_decided_run

        if (decided := await resume_decided_run(job, params)) is not None:
            return decided
    # The generator, the storage and the product do not depend on anything below: they load
    # while the run is recorded and its templates claimed (cancelled if the run ends early).
    # The job's own parameters decide: a block the tag hinted that they do not name is dropped.
    # (A job without a tenant is refused by `TemplateChoice` before these are awaited.)
    tenant_id = cast(uuid.UUID, job.tenant_id)
    generator_block = params.ad.generator_block
    hinted = reads.generator if generator_block == reads.hinted else None
    inputs = asyncio.ensure_future(
        load_run_inputs(tenant_id, job.product_id, generator_block, brief=brief, generator=hinted)
    )
    try:
        return await _record_and_run(job, params, flow_run, inputs, first.start)
    finally:
        if not inputs.done():
            inputs.cancel()
        # Retrieved whatever happened (a failure is raised by `make_ads` when it is awaited).
        await asyncio.gather(inputs, return_exceptions=True)


async def _record_and_run(
    job: ScheduledJob,
    params: JobParameters,
    flow_run: FlowRun,
    inputs: asyncio.Future[RunInputs],
    start: _RunStart | None,
) -> JobRunSummary | State:
    """Record the run, skip it if it must not run, else claim its templates and make its ads.

    The run's provider slots open as soon as its generator is loaded: their first
    `increment-with-lease` overlaps the run's record and its template claim, so the first wave's
    slots are granted by the time its task runs start. A run that waits out a jitter opens them
    after its sleep (no slot is held through it); a skipped run hands them back unused.
    """
    run_name = _run_name(job, flow_run)
    # Cosmetic: sent once the run's first wave of provider requests is out (its start-up round
    # trips and task-run starts are over; the server, busiest with them before, is idle while
    # the provider answers), or at the run's end when it never gets that far.
    renaming = _Renaming(
        lambda: rename_flow_run(
            flow_run.id,
            run_name,
            [f"job:{job.name}", f"product:{job.product_id}", f"brand:{job.brand_id}"],
            # The run's tags as the engine read them when the run started: no second read.
            current_tags=list(flow_run.tags or []),
        )
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            slots = None
            if not (run_trigger(flow_run) == "schedule" and job.jitter_seconds):
                slots = await stack.enter_async_context(_slots_for(job, params, inputs))
            return await _record_and_decide(
                job, params, flow_run, inputs, slots=slots, start=start, renaming=renaming
            )
    finally:
        await renaming.finish()  # never raises (a failed rename is logged)


def _slots_for(
    job: ScheduledJob, params: JobParameters, inputs: asyncio.Future[RunInputs]
) -> contextlib.AbstractAsyncContextManager[asyncio.Future[ProviderSlots]]:
    """`provider_slots_ahead` for a run of `job`: its templates × variations requests."""
    templates = (
        (job.template_count or 1) if job.template_mode == "unused" else len(job.template_ids or [])
    )
    return provider_slots_ahead(
        inputs,
        requests=max(templates, 1) * params.ad.variations,
        concurrency=params.template_concurrency,
        # Handed back after the run's body; `provider_slots_returned` waits for them.
        after_run=True,
    )


class _Renaming:
    """The run's rename (`rename_flow_run`): started once (`start`), awaited by `finish`."""

    def __init__(self, rename: Callable[[], Awaitable[None]]) -> None:
        self._rename = rename
        self._sending: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Send the rename now, without waiting for it (no-op once sent)."""
        if self._sending is None:
            self._sending = asyncio.ensure_future(self._rename())

    async def finish(self) -> None:
        """Send the rename if it was not, and wait for it."""
        self.start()
        assert self._sending is not None
        await self._sending


async def _record_and_decide(
    job: ScheduledJob,
    params: JobParameters,
    flow_run: FlowRun,
    inputs: asyncio.Future[RunInputs],
    *,
    slots: asyncio.Future[ProviderSlots] | None,
    start: _RunStart | None,
    renaming: _Renaming,
) -> JobRunSummary | State:
    logger = get_run_logger()
    trigger = run_trigger(flow_run)
    slot_time = scheduled_time(flow_run)
    if start is None:  # a run back from its approval: its first read recorded nothing
        start = await _record_start(job, flow_run)
    job_run_id, owns_slot = start.job_run_id, start.owns_slot

    if trigger == "schedule":
        if not owns_slot:
            return await _skip(
                job,
                flow_run.id,
                "duplicate_slot",
                f"another run already handled the slot scheduled for {slot_time:%Y-%m-%d %H:%M %Z}",
            )
        lateness = utcnow() - (slot_time or utcnow())
        if is_misfire(lateness, job.misfire_grace_seconds):
            return await _skip(
                job,
                flow_run.id,
                "misfire",
                f"started {_human(lateness)} after its scheduled time, beyond the job's grace "
                f"period of {_human(timedelta(seconds=job.misfire_grace_seconds))}: missed",
            )
    if job.status != "active" and trigger == "schedule":
        return await _skip(job, flow_run.id, "inactive", f"the job is {job.status}")
    if trigger == "schedule" and job.jitter_seconds:
        # Spread jobs that share a cron minute so they do not hit the provider together.
        delay = random.uniform(0, job.jitter_seconds)
        logger.info("jitter: starting in %.1f s", delay)
        await asyncio.sleep(delay)

    try:
        return await _claim_and_make_ads(
            job, params, flow_run.id, job_run_id, inputs, slots=slots, renaming=renaming
        )
    except BaseException as exc:
        # Whatever stopped the run (a block that does not load, a database outage, a
        # cancellation): nothing of it stays pending or claimed. The hooks and the reconciler
        # do the same for the ends this line never sees (a killed process).
        await settle_after(flow_run.id, exc)
        raise


async def _claim_and_make_ads(
    job: ScheduledJob,
    params: JobParameters,
    flow_run_id: uuid.UUID,
    job_run_id: uuid.UUID,
    inputs: asyncio.Future[RunInputs],
    *,
    slots: asyncio.Future[ProviderSlots] | None,
    renaming: _Renaming,
) -> JobRunSummary | State:
    choice = TemplateChoice(
        tenant_id=job.tenant_id,
        product_id=job.product_id,
        flow_run_id=flow_run_id,
        names=None if job.template_mode == "unused" else list(job.template_ids or []),
        count=job.template_count or 1,
        when_exhausted=job.exhausted_policy,
        ad=params.ad,
        job_id=job.id,
        job_run_id=job_run_id,
    )
    async with contextlib.AsyncExitStack() as stack:
        if slots is None:  # after a jitter: the slots open now, while the templates are claimed
            slots = await stack.enter_async_context(_slots_for(job, params, inputs))
        return await _claim_and_generate(
            job,
            params,
            flow_run_id,
            job_run_id,
            inputs=inputs,
            choice=choice,
            slots=slots,
            renaming=renaming,
        )


async def _claim_and_generate(
    job: ScheduledJob,
    params: JobParameters,
    flow_run_id: uuid.UUID,
    job_run_id: uuid.UUID,
    *,
    inputs: asyncio.Future[RunInputs],
    choice: TemplateChoice,
    slots: asyncio.Future[ProviderSlots],
    renaming: _Renaming,
) -> JobRunSummary | State:
    try:
        opened = await select_templates(choice)
    except TemplatesExhaustedError as exc:
        return Failed(message=str(exc))
    templates = [ticket.template for ticket in opened]
    if not templates:
        why = (
            "no unused template is left for this product and the job's policy is 'skip'"
            if job.exhausted_policy == "skip"
            else "no template is available to this product: every active one is held by "
            "another run, or none is active (see `ad-scheduler templates list --inactive`)"
        )
        return await _skip(job, flow_run_id, "no_templates", why)

    plan = RunPlan(
        tenant_id=job.tenant_id,
        product_id=job.product_id,
        flow_run_id=flow_run_id,
        templates=templates,
        opened=opened,
        ad=params.ad,
        export=params.held_export(),  # approval hook: nothing is exported before the decision
        job_id=job.id,
        job_run_id=job_run_id,
        concurrency=params.template_concurrency,
        # A template set aside in `unused` mode is replaced by another unused one.
        replace_set_aside=job.template_mode == "unused",
    )

    recorded = False

    async def after_generation(outcomes: list[AdRunOutcome]) -> None:
        """Beside the export: the run's artifact made ready (the ads, not the export; sent once
        the final state is set) and, when nothing is exported, the run's summary (no export
        failure can change it)."""
        nonlocal recorded
        made = PipelineResult(outcomes=outcomes)
        prepare_run_artifact(flow_run_id, job.name, made, storage=(await inputs).storage)
        if plan.export.destination == "none":
            await _record_summary(job_run_id, _summary(job, flow_run_id, made)[0])
            recorded = True

    beat = asyncio.create_task(_heartbeat(job_run_id))
    try:
        result = await make_ads(
            plan,
            inputs=inputs,
            slots=slots,
            on_generated=after_generation,
            on_first_wave=renaming.start,
        )
    finally:
        beat.cancel()
    outcome = await _finish(job, flow_run_id, job_run_id, result, recorded=recorded)
    if params.approval.enabled:
        # approval hook: the run suspends here (its process exits) and resumes above.
        from flows.approval import request_approval

        await request_approval(job, params, job_run_id)
    return outcome


def _summary(
    job: ScheduledJob, flow_run_id: uuid.UUID, result: PipelineResult
) -> tuple[JobRunEvent, list[str], list[str], int]:
    """The run's summary row event, its notes, its errors and the number of ads made."""
    ads = sum(len(o.ads) for o in result.outcomes if o.ok)
    made, planned = len(result.succeeded), len(result.outcomes)
    summary_line = f"{ads} ads from {made}/{planned} templates"
    notes = [summary_line]
    if result.failed:
        notes.append(result.failure_message())
    if result.set_aside:
        notes.append(result.set_aside_message())
    errors = []
    if result.failed and result.succeeded:
        errors.append(result.failure_message())
    if result.export_failures:
        # The ads are made and kept; a failed export is the run's error to see, whole.
        errors.append("export failed: " + "; ".join(result.export_failures))
    event = JobRunEvent(
        flow_run_id=flow_run_id,
        scheduled_job_id=job.id,
        status="running",
        ad_run_ids=result.ad_run_ids,
        templates_used=[o.template for o in result.succeeded],
        logs="; ".join(notes),
        error_message="; ".join(errors)[:10_000] if errors else None,
    )
    return event, notes, errors, ads


async def _finish(
    job: ScheduledJob,
    flow_run_id: uuid.UUID,
    job_run_id: uuid.UUID,
    result: PipelineResult,
    *,
    recorded: bool = False,
) -> JobRunSummary | State:
    """Record the run's summary (unless `recorded` already) and decide its final state.

    A run that made ads from at least one template is Completed (it counts toward `max_runs`
    and ends a failure streak), its failed templates named in the row's `error_message`; a run
    that made no ads at all is Failed (it counts toward the automatic pause). Templates set
    aside are named in the run's note (`logs`) either way.
    """
    event, notes, errors, ads = _summary(job, flow_run_id, result)
    if not recorded:
        await _record_summary(job_run_id, event)
    if not result.succeeded:
        return Failed(message="; ".join(notes[1:]) or "no template produced ads")
    if result.export_failures:
        # Completed (the ads are made, kept and counted), under a name the run list shows.
        return Completed(name=EXPORTS_FAILED_STATE_NAME, message="; ".join([*notes, *errors]))
    if result.failed:
        # Shown on the run in the Prefect UI: completed, but not every template made ads.
        return Completed(message="; ".join(notes))
    return JobRunSummary(
        job_id=job.id,
        templates=[o.template for o in result.outcomes],
        ad_run_ids=result.ad_run_ids,
        ads=ads,
        failed_templates=[o.template for o in result.failed],
    )


async def _heartbeat(job_run_id: uuid.UUID) -> None:
    """Touch the run's row while it works: the reconciler treats silence as a dead process."""
    interval = get_settings().run_heartbeat_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            async with session_scope() as session:
                await session.execute(
                    sa.update(ScheduledJobRun)
                    .where(ScheduledJobRun.id == job_run_id, ScheduledJobRun.status == "running")
                    .values(updated_at=utcnow())
                )
        except Exception as exc:  # a missed beat is not worth failing the run for
            get_run_logger().warning("run heartbeat failed: %s", type(exc).__name__)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return UTC


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def prepare_flow_process() -> None:
    """Pay a flow process's one-time imports and set-up when the flow is loaded.

    Prefect loads the flow module before it sets the run Running (a scheduled run's process is
    started ahead of its slot): what is done here is not inside the run. Without it the run pays
    it: the database driver and ORM mappers (the first query), Prefect's task engine (the first
    task call), Pillow's image plugins (the first template read), the providers' TLS context
    (the first request) and Prefect's cron schedule (every final state re-derives the job's next
    run: ~20 ms of each forked run's CPU went to importing it in its last hook). Generator
    modules are not imported here: a run imports only the one its block names (~15 ms;
    tests/production/test_registry.py; the fork server imports them all, once). Never raises:
    whatever is not prepared here is done where it is first used. Last, what is loaded is
    frozen out of the garbage collector's generations (`gc.freeze`); the module turns the
    collector, off for its imports, back on after this.
    """
    prepare_process()
    try:
        import prefect.task_engine
        import prefect.utilities.visualization  # noqa: F401 - imported by every task call
        from PIL import Image

        from blocks.generators.provider_http import shared_ssl_context
        from domain.cron import next_fire_time

        Image.preinit()
        shared_ssl_context()  # the CA bundle, read once for every provider request
        next_fire_time("0 9 * * 1", "UTC")  # imports Prefect's cron schedule and its date code
    except Exception as exc:  # an optimisation only
        get_logger("ad_scheduler.flows").debug("flow process not prepared: %s", exc)
    # What is loaded now lives as long as the process: out of the collector's sight, a full
    # collection during the run scans only the run's own objects (~85 ms less per collection
    # here: ~170,000 objects after these imports). No collection first: it would cost every
    # process ~0.1 s at start to free ~5,500 import-time objects.
    gc.freeze()


try:
    prepare_flow_process()
finally:
    # Switched off at the top of this module for its imports.
    if _COLLECTING:
        gc.enable()


if __name__ == "__main__":
    import sys

    asyncio.run(run_scheduled_job(uuid.UUID(sys.argv[1])))
