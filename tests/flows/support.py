"""Helpers for flow tests: a job with real templates in local storage, deployment runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow_async
from prefect.states import Scheduled, State

from blocks.storage import default_storage
from db.models import ScheduledJob, ScheduledJobRun
from db.session import session_scope
from domain.params import JobParameters
from flows.sample_data import seed_sample_data
from flows.scheduled_job import run_scheduled_job
from tests.support.factories import make_job


async def job_with_templates(
    tenant_id: uuid.UUID, templates: int = 5, **job_kw: Any
) -> ScheduledJob:
    """Sample product + `templates` real template PNGs in local storage + a job."""
    storage = default_storage()
    _brand, product, _report = await seed_sample_data(tenant_id, storage, templates=templates)
    params = job_kw.pop("parameters", JobParameters().model_dump(mode="json"))
    async with session_scope() as session:
        return await make_job(session, tenant_id, product, parameters=params, **job_kw)


async def deployment_for(name: str) -> uuid.UUID:
    """A deployment of run-scheduled-job (no work pool needed: runs are executed in-process)."""
    deployment = await run_scheduled_job.ato_deployment(name=name)  # type: ignore[attr-defined]
    return await deployment.aapply()


async def scheduled_run(
    deployment_id: uuid.UUID, job_id: uuid.UUID, when: datetime, tags: list[str] | None = None
) -> FlowRun:
    """A flow run the schedule would create (tag one-time marks it schedule-triggered)."""
    async with get_client() as client:
        return await client.create_flow_run_from_deployment(
            deployment_id,
            parameters={"job_id": str(job_id)},
            state=Scheduled(scheduled_time=when),
            tags=tags if tags is not None else ["one-time"],
        )


async def execute(flow_run: FlowRun) -> State:
    """Run an existing flow run in this process, as a worker's subprocess would."""
    state = await run_flow_async(
        run_scheduled_job, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
    )
    assert isinstance(state, State)
    return state


async def job_runs_of(job_id: uuid.UUID, *, order_by: Any = None) -> list[ScheduledJobRun]:
    """A job's `scheduled_job_runs` rows, oldest first (by `created_at` unless told)."""
    order = ScheduledJobRun.created_at if order_by is None else order_by
    async with session_scope() as s:
        rows = await s.scalars(
            sa.select(ScheduledJobRun)
            .where(ScheduledJobRun.scheduled_job_id == job_id)
            .order_by(order)
        )
        return list(rows.all())
