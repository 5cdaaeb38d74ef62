"""Job ↔ Prefect deployment, in one place: plan, target, converge.

One deployment of `run-scheduled-job` per scheduled job. `plan_for` is pure: the job row (and its
product's and brand's names) → `JobDeployment`, the state the deployment should be in.
`resolve_target` says *where* it runs. `converge_job_deployment` makes Prefect match the plan,
writing only what differs. The SDK (`scheduler/sdk.py`) and the
flows' automatic status changes (`converge_job_status`, used by `flows/history.py` when a job
completes or pauses itself) both go through it.

The SDK owns *when* (schedule, pause state, one-time run) and *what* (the job id, tags,
description, concurrency); CI owns *where*: work pool, queue, pull steps and job variables are
copied from the base deployment `run-scheduled-job/<base>` that `prefect deploy` created from
`prefect.yaml`, or fall back to a configured process work pool.

Updates never delete and recreate: the deployment is PATCHed (`update_deployment`, which keeps
schedules) and its cron schedule is edited in place, found by its slug. `create_deployment` is a
replace-everything upsert that gives schedules new ids, which duplicates scheduled runs and
re-activates paused schedules (PrefectHQ/prefect#18894, #19302; notes/SCHEDULERS.md §B), so it
is only called for a deployment that does not exist yet.

A one-time job is a deployment without a schedule plus one flow run scheduled at its time, with
an idempotency key, so re-applying never creates a second run.
"""

from __future__ import annotations

import functools
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitStrategy,
    ConcurrencyOptions,
    FlowRun,
    StateType,
)
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled
from prefect.utilities.callables import parameter_schema

from config.settings import DEFAULT_BASE_DEPLOYMENT, DEFAULT_WORK_POOL, get_settings
from domain.tags import generator_tag
from domain.vocab import SCHEDULED_JOB_FLOW

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.responses import DeploymentResponse

    from db.models import ScheduledJob

#: The pull step of the fallback target, as in `prefect.yaml`: run from the code installed on the
#: worker (`scheduler/pull_steps.py`; a dotted name Prefect imports on the worker, not here).
PULL_STEP = "scheduler.pull_steps.set_code_directory"

#: The flow every job deployment runs, and where its code is.
FLOW_NAME = SCHEDULED_JOB_FLOW
ENTRYPOINT = "flows/scheduled_job.py:run_scheduled_job"
#: The slug of the job's cron schedule: how the schedule is found and edited in place.
SCHEDULE_SLUG = "ad-job-cron"
#: Tags on runs the SDK creates itself (the flow tells them from scheduler-created runs).
ONE_TIME_TAG = "one-time"
MANUAL_TAG = "manual"
APP_TAG = "ad-scheduler"

COLLISION_STRATEGY = {
    "skip": ConcurrencyLimitStrategy.CANCEL_NEW,
    "queue": ConcurrencyLimitStrategy.ENQUEUE,
}


def deployment_name(job_id: UUID, job_name: str) -> str:
    """A stable, unique deployment name: readable slug of the job's name plus its id.

    Computed once at creation and stored in `scheduled_jobs.deployment_name`; renaming the job
    later does not rename the deployment.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:40].strip("-") or "job"
    return f"{slug}-{job_id}"


def job_tags(job: ScheduledJob) -> list[str]:
    """Tags for filtering in the UI and for the reconciler, and the generator block the job's
    runs start loading before they have read the job (`domain.tags`)."""
    tags = [
        APP_TAG,
        f"job:{job.id}",
        f"tenant:{job.tenant_id}",
        f"brand:{job.brand_id}",
        f"product:{job.product_id}",
    ]
    # Read, not validated: a job whose stored parameters no longer validate still syncs (its
    # runs report the problem).
    block = ((job.parameters or {}).get("ad") or {}).get("generator_block")
    if isinstance(block, str) and block:
        tags.append(generator_tag(block))
    return tags


def one_time_idempotency_key(job_id: UUID, at: datetime) -> str:
    """The key of a one-time job's run: one run per job and time, however often it is applied."""
    return f"ad-scheduler:{job_id}:once:{at.astimezone(UTC).isoformat()}"


@functools.cache
def job_parameter_schema() -> dict[str, Any]:
    """The flow's parameter schema, so the UI's Run form works and parameters are enforced."""
    # Imported here: the flow module imports this one (through flows/history.py).
    from flows.scheduled_job import run_scheduled_job

    return parameter_schema(run_scheduled_job.fn).model_dump()


@dataclass(frozen=True)
class DeploymentTarget:
    """Where job deployments run: copied from the base deployment, or the fallback pool."""

    work_pool_name: str
    work_queue_name: str | None = None
    pull_steps: list[dict[str, Any]] | None = None
    job_variables: dict[str, Any] = field(default_factory=dict)
    source: str = "fallback"


async def resolve_target(
    client: PrefectClient, base_deployment: str | None = None, work_pool: str | None = None
) -> DeploymentTarget:
    """Copy *where* from `run-scheduled-job/<base>`; without it use the configured process pool.

    The fallback has the same pull step as `prefect.yaml`: run from the ad-scheduler code
    installed on the worker that picks the run up (`scheduler/pull_steps.py`), never a path of
    the machine that registered the job.
    """
    base = base_deployment or get_settings().base_deployment or DEFAULT_BASE_DEPLOYMENT
    try:
        found = await client.read_deployment_by_name(f"{FLOW_NAME}/{base}")
    except ObjectNotFound:
        found = None
    if found is not None and found.work_pool_name:
        return DeploymentTarget(
            work_pool_name=found.work_pool_name,
            work_queue_name=found.work_queue_name,
            pull_steps=found.pull_steps,
            job_variables=dict(found.job_variables or {}),
            source=f"{FLOW_NAME}/{base}",
        )
    pool = work_pool or get_settings().work_pool or DEFAULT_WORK_POOL
    await ensure_process_pool(client, pool)
    return DeploymentTarget(
        work_pool_name=pool,
        pull_steps=[{PULL_STEP: {}}],
    )


def engine_command(python: str | None = None) -> str:
    """The flow-run command of our process pools: `setsid <python> -m scheduler.forkserver_client`.

    That command forks the run from the worker's fork server when the worker's environment
    names one (`scheduler.local_prefect.process_worker` starts both), ~2 CPU-s less per run than
    a fresh interpreter; otherwise it becomes `python -m prefect.engine` in place (`os.execv`):
    the same one interpreter per run as before (scheduler/forkserver_client.py).

    With a `command` set on the pool, Prefect 3.9's process worker starts the engine directly
    (`EngineCommandStarter`): one interpreter per flow run, which runs the pull steps itself.
    Without one it starts a workspace supervisor first, which imports Prefect and runs the pull
    steps, then the engine: two interpreters, ~2.5 CPU-s more per run (docs/scaling.md).

    `setsid` (util-linux; it execs in place, no extra process): the `EngineCommandStarter` of
    a process worker leaves the engine in the worker's process group, where the workspace starter
    gives it a session of its own. Without it, a signal to the worker's group (a service
    manager's stop, Ctrl-C, `stop_process_group`) killed every run in flight, leaving it Running
    (tests/production/test_worker_sigterm.py). Left out where there is no `setsid`.

    The interpreter is this one by default (the pool is created by the installation its worker
    runs from); a worker host with another interpreter overrides the `command` job variable.
    """
    engine = f"{python or sys.executable} -m scheduler.forkserver_client"
    return f"setsid {engine}" if shutil.which("setsid") else engine


def process_base_job_template(python: str | None = None) -> dict[str, Any]:
    """Prefect's process base job template with `command` defaulting to `engine_command()`."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = engine_command(python)
    return template


async def ensure_process_pool(client: PrefectClient, name: str) -> None:
    """Create the fallback process work pool when it does not exist (the embedded setup).

    Its flow runs start as one interpreter (`process_base_job_template`).
    """
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        await client.read_work_pool(name)
        return
    except ObjectNotFound:
        pass
    try:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                base_job_template=process_base_job_template(),
            )
        )
    except ObjectAlreadyExists:
        pass


@dataclass(frozen=True)
class JobDeployment:
    """Everything the deployment of one job should look like, computed from the job row.

    A pure value, so that a failed update can be undone by converging to the previous value.
    """

    job_id: UUID
    name: str
    description: str
    tags: list[str]
    status: str
    overlap: str
    cron: str | None
    timezone: str
    one_time_at: datetime | None

    @property
    def schedule_active(self) -> bool:
        """A completed job's schedule is switched off (a paused job pauses the deployment)."""
        return self.status != "completed"

    @property
    def paused(self) -> bool:
        """Paused or completed jobs have a paused deployment: no new runs."""
        return self.status != "active"

    @property
    def parameters(self) -> dict[str, Any]:
        """The only deployment parameter: the job id (everything else is read from the DB)."""
        return {"job_id": str(self.job_id)}

    @property
    def concurrency_options(self) -> ConcurrencyOptions:
        """Collision strategy of the concurrency limit of 1."""
        return ConcurrencyOptions(collision_strategy=COLLISION_STRATEGY[self.overlap])

    def cron_schedule(self) -> CronSchedule | None:
        """The cron schedule in the job's time zone (None for one-time jobs)."""
        if self.cron is None:
            return None
        return CronSchedule(cron=self.cron, timezone=self.timezone)

    def schedule_creates(self) -> list[DeploymentScheduleCreate]:
        """The schedules to create with a new deployment."""
        schedule = self.cron_schedule()
        if schedule is None:
            return []
        return [
            DeploymentScheduleCreate(
                schedule=schedule, active=self.schedule_active, slug=SCHEDULE_SLUG
            )
        ]


def describe_job(job: ScheduledJob, product_name: str, brand_name: str) -> str:
    """A description a person can read in the Prefect UI."""
    if job.schedule_type == "recurring":
        when = f"Runs on cron `{job.cron_expression}` in {job.timezone}"
        if job.jitter_seconds:
            when += f" (random delay up to {job.jitter_seconds} s)"
    else:
        at = job.scheduled_at
        when = f"Runs once at {at.isoformat() if at else '?'}"
    if job.max_runs:
        when += f", stops after {job.max_runs} completed runs"
    if job.template_mode == "unused":
        tpl = (
            f"{job.template_count} unused templates per run "
            f"(when none left: {job.exhausted_policy})"
        )
    elif job.template_mode == "specific":
        tpl = f"{job.template_count} chosen templates"
    else:
        tpl = f"{job.template_count} uploaded templates"
    ad = job.parameters.get("ad", {})
    export = job.parameters.get("export", {})
    destination = export.get("destination", "none")
    lines = [
        f"Ad job “{job.name}” for product “{product_name}” (brand “{brand_name}”).",
        f"{when}.",
        f"Makes {ad.get('variations', '?')} variations from {tpl}; export: {destination}.",
        f"Overlapping runs: {job.overlap_policy}; a run later than "
        f"{job.misfire_grace_seconds} s is skipped.",
        "Managed by ad-scheduler (edit with `ad-scheduler jobs …` or the SDK, not here).",
    ]
    if job.description:
        lines += ["", job.description]
    return "\n".join(lines)


def plan_for(job: ScheduledJob, product_name: str, brand_name: str) -> JobDeployment:
    """The deployment the job should have."""
    return JobDeployment(
        job_id=job.id,
        name=job.deployment_name or deployment_name(job.id, job.name),
        description=describe_job(job, product_name, brand_name),
        tags=job_tags(job),
        status=job.status or "active",
        overlap=job.overlap_policy,
        cron=job.cron_expression if job.schedule_type == "recurring" else None,
        timezone=job.timezone,
        one_time_at=job.scheduled_at if job.schedule_type == "one_time" else None,
    )


async def create_job_deployment(
    client: PrefectClient, plan: JobDeployment, target: DeploymentTarget, flow_id: UUID
) -> UUID:
    """Create the deployment (one API call). Only for a deployment that does not exist yet."""
    return await client.create_deployment(
        flow_id=flow_id,
        name=plan.name,
        entrypoint=ENTRYPOINT,
        parameters=plan.parameters,
        parameter_openapi_schema=job_parameter_schema(),
        enforce_parameter_schema=True,
        description=plan.description,
        tags=plan.tags,
        schedules=plan.schedule_creates(),
        paused=plan.paused,
        concurrency_limit=1,
        concurrency_options=plan.concurrency_options,
        work_pool_name=target.work_pool_name,
        work_queue_name=target.work_queue_name,
        pull_steps=target.pull_steps,
        job_variables=target.job_variables,
    )


async def converge_job_deployment(
    client: PrefectClient,
    deployment_id: UUID | None,
    plan: JobDeployment,
    target: DeploymentTarget,
    flow_id: UUID,
) -> UUID:
    """Make the job's deployment match `plan` and `target`, creating it if missing; its id.

    Idempotent: converging twice to the same plan makes no API write the second time, so
    re-applying a job creates no duplicate runs and leaves a paused job paused.
    """
    current = await _read_deployment(client, deployment_id) if deployment_id else None
    if current is None:
        new_id = await create_job_deployment(client, plan, target, flow_id)
        await converge_one_time_run(client, new_id, plan)
        return new_id
    await _converge_existing(client, current, plan, target)
    return current.id


async def converge_existing_deployment(
    client: PrefectClient, deployment_id: UUID, plan: JobDeployment
) -> bool:
    """Make an existing deployment match `plan`, leaving *where* it runs as it is.

    For changes that do not decide where a job runs (a flow completing or pausing its job).

    Returns:
        False when the deployment does not exist (it is not created), else True.
    """
    current = await _read_deployment(client, deployment_id)
    if current is None:
        return False
    await _converge_existing(client, current, plan, None)
    return True


async def _converge_existing(
    client: PrefectClient,
    current: DeploymentResponse,
    plan: JobDeployment,
    target: DeploymentTarget | None,
) -> None:
    patch: dict[str, Any] = {}
    if current.description != plan.description:
        patch["description"] = plan.description
    if sorted(current.tags or []) != sorted(plan.tags):
        patch["tags"] = plan.tags
    if current.parameters != plan.parameters:
        patch["parameters"] = plan.parameters
    if not current.enforce_parameter_schema:
        patch["enforce_parameter_schema"] = True
    if current.parameter_openapi_schema != job_parameter_schema():
        patch["parameter_openapi_schema"] = job_parameter_schema()
    options = current.concurrency_options
    limit = current.global_concurrency_limit
    if (
        limit is None
        or limit.limit != 1
        or options is None
        or options.collision_strategy != plan.concurrency_options.collision_strategy
    ):
        patch["concurrency_limit"] = 1
        patch["concurrency_options"] = plan.concurrency_options
    if target is not None:
        patch |= _target_patch(current, target)
    if current.paused != plan.paused:
        patch["paused"] = plan.paused
    if patch:
        # A PATCH: schedules are not part of it, so they keep their ids (no duplicate runs).
        await client.update_deployment(current.id, DeploymentUpdate(**patch))

    await converge_schedule(client, current, plan)
    await converge_one_time_run(client, current.id, plan)


def _target_patch(current: DeploymentResponse, target: DeploymentTarget) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    if current.work_pool_name != target.work_pool_name:
        patch["work_pool_name"] = target.work_pool_name
    if target.work_queue_name and current.work_queue_name != target.work_queue_name:
        patch["work_queue_name"] = target.work_queue_name
    if (current.pull_steps or None) != (target.pull_steps or None):
        patch["pull_steps"] = target.pull_steps
    if dict(current.job_variables or {}) != target.job_variables:
        patch["job_variables"] = target.job_variables
    return patch


async def converge_job_status(job_id: UUID) -> UUID | None:
    """Make an existing job deployment match its job row (after the job completed or paused).

    The converge the SDK uses, with the plan read from the database and *where* left alone:
    a `completed` job's schedule is switched off and its deployment paused, a `paused` job's
    deployment is paused (its schedule stays as it is, so resume restores it exactly).
    Idempotent; a job without a deployment (or whose deployment is gone) is left alone.

    Returns:
        The deployment's id, or None when there was nothing to converge.
    """
    from prefect.client.orchestration import get_client

    from db.queries.job_runs import job_with_names
    from db.session import session_scope

    async with session_scope() as session:
        found = await job_with_names(session, job_id)
    if found is None or found.job.prefect_deployment_id is None:
        return None
    plan = plan_for(found.job, found.product_name, found.brand_name)
    async with get_client() as client:
        if await converge_existing_deployment(client, found.job.prefect_deployment_id, plan):
            return found.job.prefect_deployment_id
    return None


async def _read_deployment(client: PrefectClient, deployment_id: UUID) -> DeploymentResponse | None:
    try:
        return await client.read_deployment(deployment_id)
    except ObjectNotFound:
        return None


async def converge_schedule(
    client: PrefectClient, current: DeploymentResponse, plan: JobDeployment
) -> None:
    """Edit the cron schedule in place by slug; add it if missing; remove it for one-time jobs.

    A job whose schedule is off (completed) has every schedule of its deployment off, not only
    its own: nothing may start a run of a completed job. The schedules are the ones `current`
    was read with (a deployment's read carries them; the PATCH before this leaves them alone).
    """
    deployment_id = current.id
    schedules = current.schedules
    ours = next((s for s in schedules if s.slug == SCHEDULE_SLUG), None)
    if not plan.schedule_active:
        for other in schedules:
            if other is not ours and other.active:
                await client.update_deployment_schedule(deployment_id, other.id, active=False)
    wanted = plan.cron_schedule()
    if wanted is None:
        if ours is not None:
            await client.delete_deployment_schedule(deployment_id, ours.id)
        return
    if ours is None:
        await client.create_deployment_schedules(
            deployment_id,
            [
                DeploymentScheduleCreate(
                    schedule=wanted, active=plan.schedule_active, slug=SCHEDULE_SLUG
                )
            ],
        )
        return
    existing = ours.schedule
    same_schedule = (
        isinstance(existing, CronSchedule)
        and existing.cron == wanted.cron
        and (existing.timezone or "UTC") == (wanted.timezone or "UTC")
    )
    if same_schedule and ours.active == plan.schedule_active:
        return
    await client.update_deployment_schedule(
        deployment_id,
        ours.id,
        active=plan.schedule_active,
        schedule=None if same_schedule else wanted,
    )


async def converge_one_time_run(
    client: PrefectClient, deployment_id: UUID, plan: JobDeployment
) -> FlowRun | None:
    """A one-time job that is active has exactly one pending run at its time; others have none.

    Pending runs the SDK created for an earlier time (or for a paused job) are deleted; the run
    for the current time is created with an idempotency key, so creating it again is a no-op.
    """
    wanted_key = (
        one_time_idempotency_key(plan.job_id, plan.one_time_at)
        if plan.one_time_at is not None and plan.status == "active"
        else None
    )
    for run in await pending_sdk_runs(client, deployment_id, tag=ONE_TIME_TAG):
        if run.idempotency_key != wanted_key:
            await _delete_run(client, run.id)
    if wanted_key is None or plan.one_time_at is None:
        return None
    return await client.create_flow_run_from_deployment(
        deployment_id,
        parameters=plan.parameters,
        state=Scheduled(scheduled_time=plan.one_time_at),
        tags=[ONE_TIME_TAG],
        idempotency_key=wanted_key,
    )


async def pending_sdk_runs(client: PrefectClient, deployment_id: UUID, tag: str) -> list[FlowRun]:
    """Runs of the deployment with `tag` that have not started (Scheduled or Pending)."""
    return await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tag]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        ),
        limit=200,
    )


async def _delete_run(client: PrefectClient, flow_run_id: UUID) -> None:
    try:
        await client.delete_flow_run(flow_run_id)
    except ObjectNotFound:
        pass


async def trigger_run(
    client: PrefectClient, deployment_id: UUID, job_id: UUID, idempotency_key: str | None = None
) -> FlowRun:
    """A manual run, now (tagged `manual`; the flow records it but does not count it)."""
    return await client.create_flow_run_from_deployment(
        deployment_id,
        parameters={"job_id": str(job_id)},
        tags=[MANUAL_TAG],
        idempotency_key=idempotency_key,
    )


async def remove_job_deployment(client: PrefectClient, deployment_id: UUID | None) -> None:
    """Delete the deployment; Prefect deletes its scheduled runs with it. Missing is fine."""
    if deployment_id is None:
        return
    try:
        await client.delete_deployment(deployment_id)
    except ObjectNotFound:
        pass


__all__ = [
    "DEFAULT_BASE_DEPLOYMENT",
    "DEFAULT_WORK_POOL",
    "ENTRYPOINT",
    "FLOW_NAME",
    "SCHEDULE_SLUG",
    "DeploymentTarget",
    "JobDeployment",
    "converge_existing_deployment",
    "converge_job_deployment",
    "converge_job_status",
    "engine_command",
    "ensure_process_pool",
    "process_base_job_template",
    "create_job_deployment",
    "deployment_name",
    "plan_for",
    "remove_job_deployment",
    "resolve_target",
    "trigger_run",
]
