"""A run's first reads go out from its Running hook; Prefect asks the server nothing about results.

Prefect's engine reads the run back and sets up its context between the Running hook and the
flow body (~50-90 ms here): the hook (`run_started`) starts the job read and the generator
block's read then, and the body takes them. Real Prefect server and database; the flow runs in
this process as a worker's flow-run process runs it (`run_flow_async` on an existing run).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import prefect.results
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.states import Crashed, Running

from blocks.generators.local import LocalAdRenderer
from db.types import utcnow
from domain.params import AdParameters, JobParameters
from domain.tags import generator_tag
from flows import scheduled_job
from flows.scheduled_job import release_connections, run_scheduled_job, run_started
from tests.flows.support import (
    deployment_for,
    execute,
    job_runs_of,
    job_with_templates,
    scheduled_run,
)

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


def _spy_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record where each run's reads start: "hook" (no flow-run context yet) or "body"."""
    where: list[str] = []
    start = scheduled_job._EarlyReads.start

    def spy(job_id: uuid.UUID, flow_run: FlowRun) -> Any:
        where.append("hook" if FlowRunContext.get() is None else "body")
        return start(job_id, flow_run)

    monkeypatch.setattr(scheduled_job._EarlyReads, "start", staticmethod(spy))
    return where


async def test_the_running_hook_starts_the_reads_and_the_body_takes_them(
    tenant_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = f"early-{uuid.uuid4().hex[:8]}"
    await LocalAdRenderer().asave(block)
    generator = f"{LocalAdRenderer._block_type_slug}/{block}"
    params = JobParameters(ad=AdParameters(variations=1, generator_block=generator))
    job = await job_with_templates(
        tenant_id, templates=2, template_count=2, parameters=params.model_dump(mode="json")
    )
    loads: list[str | None] = []
    load_generator = scheduled_job.load_generator

    async def counted(name: str | None) -> Any:
        loads.append(name)
        return await load_generator(name)

    monkeypatch.setattr(scheduled_job, "load_generator", counted)
    where = _spy_starts(monkeypatch)
    deployment = await deployment_for(f"early-{uuid.uuid4().hex[:6]}")
    flow_run = await scheduled_run(
        deployment,
        job.id,
        utcnow() - timedelta(seconds=1),
        tags=["one-time", generator_tag(generator)],
    )
    state = await execute(flow_run)
    assert state.is_completed(), state.message
    # Started once, by the hook; the body took them (it started none), the generator block once.
    assert where == ["hook"]
    assert loads == [generator]
    assert scheduled_job._early_reads == {}
    (row,) = await job_runs_of(job.id)
    assert row.status == "completed" and len(row.templates_used or []) == 2


async def test_a_run_called_without_its_hook_starts_the_reads_in_its_body(
    tenant_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    monkeypatch.setattr(run_scheduled_job, "on_running_hooks", [])
    where = _spy_starts(monkeypatch)
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed(), state.message
    assert where == ["body"]
    assert scheduled_job._early_reads == {}


async def test_reads_a_body_never_took_are_stopped_by_the_last_final_state_step(
    tenant_id: uuid.UUID,
) -> None:
    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    deployment = await deployment_for(f"early-{uuid.uuid4().hex[:6]}")
    flow_run = await scheduled_run(deployment, job.id, utcnow())
    # The hook ran (the run went Running), then the engine failed before the body.
    await run_started(flow=run_scheduled_job, flow_run=flow_run, state=Running())
    reads = scheduled_job._early_reads[flow_run.id]
    await release_connections(flow=run_scheduled_job, flow_run=flow_run, state=Crashed())
    assert flow_run.id not in scheduled_job._early_reads
    assert reads.job.done()  # read or stopped: nothing left running with a connection


async def test_the_hooks_first_read_records_the_runs_start_and_claims_its_slot(
    tenant_id: uuid.UUID,
) -> None:
    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    deployment = await deployment_for(f"early-{uuid.uuid4().hex[:6]}")
    at = utcnow() - timedelta(seconds=1)
    flow_run = await scheduled_run(deployment, job.id, at, tags=["one-time"])
    await run_started(flow=run_scheduled_job, flow_run=flow_run, state=Running())
    first = await scheduled_job._early_reads[flow_run.id].job
    # The row is there before the body runs, in the read's own transaction, with its name and
    # its slot; the body takes it instead of recording the start again.
    assert first.job is not None and first.start is not None and first.start.owns_slot
    (row,) = await job_runs_of(job.id)
    assert (row.id, row.status, row.trigger) == (first.start.job_run_id, "running", "schedule")
    assert row.flow_run_name is not None and row.flow_run_name.startswith(job.name)
    assert row.slot_key is not None
    # A second run of the same slot (a duplicate the server made) reads that it does not own it.
    twin = await scheduled_run(deployment, job.id, at, tags=["one-time"])
    await run_started(flow=run_scheduled_job, flow_run=twin, state=Running())
    second = await scheduled_job._early_reads[twin.id].job
    assert second.start is not None and not second.start.owns_slot
    for run in (flow_run, twin):
        await release_connections(flow=run_scheduled_job, flow_run=run, state=Crashed())


async def test_a_job_whose_parameters_do_not_validate_takes_no_slot_and_fails_on_them(
    tenant_id: uuid.UUID,
) -> None:
    job = await job_with_templates(
        tenant_id, templates=1, template_count=1, parameters={"template_concurrency": 0}
    )
    deployment = await deployment_for(f"early-{uuid.uuid4().hex[:6]}")
    at = utcnow() - timedelta(seconds=1)
    flow_run = await scheduled_run(deployment, job.id, at, tags=["one-time"])
    first = await scheduled_job._first_read(job.id, flow_run)
    assert first.job is not None and first.params is None and first.start is None
    assert await job_runs_of(job.id) == []
    state = await execute(flow_run)
    assert state.is_failed()
    assert "template_concurrency" in (state.message or "")
    (row,) = await job_runs_of(job.id)
    # Recorded by the final-state mirror: failed, holding no slot a later run of it could need.
    assert row.status == "failed" and row.slot_key is None


async def test_a_run_back_from_its_approval_records_no_start_in_its_first_read(
    tenant_id: uuid.UUID,
) -> None:
    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    deployment = await deployment_for(f"early-{uuid.uuid4().hex[:6]}")
    flow_run = await scheduled_run(deployment, job.id, utcnow(), tags=["one-time"])
    # Prefect keeps a suspended run's pause keys: this run is back from its approval.
    flow_run.empirical_policy.pause_keys = {"approval"}
    first = await scheduled_job._first_read(job.id, flow_run)
    assert first.job is not None and first.start is None
    assert await job_runs_of(job.id) == []


async def test_a_run_asks_the_server_nothing_about_result_storage(
    tenant_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spies: the real functions still run (a call would reach the server), counted.
    calls: list[str] = []
    for name in (
        "_read_server_default_result_storage_block_id",
        "_aread_server_default_result_storage_block_id",
    ):
        real = getattr(prefect.results, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(prefect.results, name, spy)
    job = await job_with_templates(tenant_id, templates=1, template_count=1)
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed(), state.message
    assert calls == []
