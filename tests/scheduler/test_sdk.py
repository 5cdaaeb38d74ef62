"""The SDK against the real Prefect server and both databases: job ↔ deployment mapping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.exceptions import ObjectNotFound

from blocks.slack_webhook import SlackIncomingWebhook
from db.errors import ConflictError, NotFoundError
from db.models import ScheduledJob, ScheduledJobRun
from db.session import session_scope
from domain.errors import InvalidJobSpec
from flows import deployment_sync as dep
from scheduler.sdk import AdScheduler, JobStateError, slack_block_name
from tests.scheduler.conftest import (
    NO_BASE,
    Catalog,
    recurring_spec,
    tenant_deployments,
    tenant_jobs,
)

SLACK_URL = "https://hooks.slack.com/services/T000/B000/sekrit-token"


async def read_runs(deployment_id: uuid.UUID):
    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


async def test_create_maps_job_to_one_deployment(ads: AdScheduler, catalog: Catalog) -> None:
    job = await ads.create(recurring_spec(catalog, overlap="queue"))

    assert job.prefect_deployment_id is not None and job.status == "active"
    assert job.deployment_name and job.deployment_name.endswith(str(job.id))
    assert job.template_mode == "unused" and job.template_count == 2 and job.max_runs == 8
    assert job.next_run_at is not None and job.next_run_at > datetime.now(UTC)
    async with get_client() as client:
        d = await client.read_deployment(job.prefect_deployment_id)
        schedules = await client.read_deployment_schedules(d.id)
    assert d.name == job.deployment_name and d.entrypoint == dep.ENTRYPOINT
    assert d.parameters == {"job_id": str(job.id)}
    assert d.enforce_parameter_schema
    assert d.parameter_openapi_schema and "job_id" in d.parameter_openapi_schema["properties"]
    assert {
        f"tenant:{catalog.tenant_id}",
        f"product:{catalog.product.id}",
        f"brand:{catalog.product.brand_id}",
        f"job:{job.id}",
    } <= set(d.tags)
    assert job.name in (d.description or "") and "America/New_York" in (d.description or "")
    assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1
    assert d.concurrency_options is not None
    assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    assert d.work_pool_name == dep.DEFAULT_WORK_POOL and not d.paused
    [s] = schedules
    assert s.slug == dep.SCHEDULE_SLUG and s.active
    assert s.schedule.cron == "0 9 * * 1" and s.schedule.timezone == "America/New_York"

    # Stored row reads back through get / list, tenant-scoped.
    assert (await ads.get(job.id)).id == job.id
    assert (await ads.get(job.name)).id == job.id
    assert [j.id for j in await ads.list_jobs(product_id=catalog.product.id)] == [job.id]
    assert await ads.list_jobs(status="paused") == []
    with pytest.raises(ConflictError):
        await ads.create(recurring_spec(catalog, name=job.name))


async def test_one_time_job_is_one_idempotent_flow_run(ads: AdScheduler, catalog: Catalog) -> None:
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    spec = recurring_spec(
        catalog, schedule={"type": "one_time", "at": at.isoformat()}, max_runs=None
    )
    job = await ads.apply(spec)
    again = await ads.apply(spec)
    assert again.id == job.id and job.schedule_type == "one_time" and job.scheduled_at == at

    assert job.prefect_deployment_id is not None
    async with get_client() as client:
        assert await client.read_deployment_schedules(job.prefect_deployment_id) == []
    [run] = await read_runs(job.prefect_deployment_id)
    assert run.expected_start_time == at and dep.ONE_TIME_TAG in run.tags
    assert run.idempotency_key == dep.one_time_idempotency_key(job.id, at)

    # Moving the time replaces the pending run; pausing removes it, resuming brings it back.
    later = at + timedelta(hours=3)
    await ads.update(job.id, schedule={"type": "one_time", "at": later.isoformat()})
    [moved] = await read_runs(job.prefect_deployment_id)
    assert moved.expected_start_time == later
    await ads.pause(job.id, note="not yet")
    assert await read_runs(job.prefect_deployment_id) == []
    await ads.resume(job.id)
    [back] = await read_runs(job.prefect_deployment_id)
    assert back.expected_start_time == later


async def test_reapply_changes_nothing_and_keeps_pause(ads: AdScheduler, catalog: Catalog) -> None:
    spec = recurring_spec(catalog)
    job = await ads.apply(spec)
    assert job.prefect_deployment_id is not None
    async with get_client() as client:
        before = await client.read_deployment(job.prefect_deployment_id)
        [sched_before] = await client.read_deployment_schedules(job.prefect_deployment_id)

    await ads.pause(job.id, note="holiday")
    again = await ads.apply(spec)
    again = await ads.apply(spec)
    assert again.id == job.id and again.status == "paused" and again.pause_note == "holiday"
    assert len(await tenant_jobs(catalog.db_url, catalog.tenant_id)) == 1
    async with get_client() as client:
        after = await client.read_deployment(job.prefect_deployment_id)
        [sched_after] = await client.read_deployment_schedules(job.prefect_deployment_id)
    assert after.paused and after.id == before.id
    # Same schedule row: the scheduler's idempotency keys (which embed its id) are unchanged,
    # so re-applying cannot duplicate scheduled runs.
    assert sched_after.id == sched_before.id

    await ads.resume(job.id)
    await ads.apply(spec)
    async with get_client() as client:
        assert not (await client.read_deployment(job.prefect_deployment_id)).paused
    assert (await ads.get(job.id)).status == "active"


async def test_update_edits_schedule_in_place(ads: AdScheduler, catalog: Catalog) -> None:
    job = await ads.create(recurring_spec(catalog))
    assert job.prefect_deployment_id is not None
    async with get_client() as client:
        [old] = await client.read_deployment_schedules(job.prefect_deployment_id)

    updated = await ads.update(
        job.id,
        schedule={"type": "recurring", "cron": "30 7 * * 1-5", "timezone": "Europe/Berlin"},
        ad={"variations": 5},
        overlap="queue",
    )
    assert updated.cron_expression == "30 7 * * 1-5" and updated.timezone == "Europe/Berlin"
    assert updated.parameters["ad"]["variations"] == 5
    async with get_client() as client:
        [new] = await client.read_deployment_schedules(job.prefect_deployment_id)
        d = await client.read_deployment(job.prefect_deployment_id)
    assert new.id == old.id and new.slug == dep.SCHEDULE_SLUG
    assert new.schedule.cron == "30 7 * * 1-5" and new.schedule.timezone == "Europe/Berlin"
    assert d.concurrency_options is not None
    assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    assert d.parameters == {"job_id": str(job.id)}


async def test_pause_resume_delete_run_now_and_history(ads: AdScheduler, catalog: Catalog) -> None:
    job = await ads.create(recurring_spec(catalog))
    dep_id = job.prefect_deployment_id
    assert dep_id is not None

    paused = await ads.pause(job.id, note="brand review")
    assert paused.status == "paused" and paused.pause_note == "brand review"
    async with get_client() as client:
        assert (await client.read_deployment(dep_id)).paused
    assert [j.id for j in await ads.list_jobs(status="paused")] == [job.id]
    resumed = await ads.resume(job.id)
    assert resumed.status == "active" and resumed.pause_note is None

    run_id = await ads.run_now(job.id)
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    assert run.deployment_id == dep_id and dep.MANUAL_TAG in run.tags
    assert run.parameters == {"job_id": str(job.id)}

    async with session_scope(catalog.db_url) as session:
        session.add(
            ScheduledJobRun(
                scheduled_job_id=job.id,
                tenant_id=catalog.tenant_id,
                status="completed",
                flow_run_id=uuid.uuid4(),
                trigger="schedule",
            )
        )
    await ads.delete(job.id)
    async with get_client() as client:
        with pytest.raises(ObjectNotFound):
            await client.read_deployment(dep_id)
    assert await read_runs(dep_id) == []
    with pytest.raises(NotFoundError):
        await ads.get(job.id)
    assert await ads.list_jobs() == []
    [row] = await tenant_jobs(catalog.db_url, catalog.tenant_id)
    assert row.deleted_at is not None
    [history] = await ads.runs(job.id)
    assert history.status == "completed"
    with pytest.raises(NotFoundError):
        await ads.pause(job.id)


async def test_completed_job_cannot_resume_and_resync_stops_it(
    ads: AdScheduler, catalog: Catalog
) -> None:
    job = await ads.create(recurring_spec(catalog))
    async with session_scope(catalog.db_url) as session:
        row = await session.get(ScheduledJob, job.id)
        assert row is not None
        row.status = "completed"
    with pytest.raises(JobStateError):
        await ads.resume(job.id)
    # The flow marked it completed; resync switches the deployment off to match.
    await ads.resync(job.id)
    assert job.prefect_deployment_id is not None
    async with get_client() as client:
        d = await client.read_deployment(job.prefect_deployment_id)
        [schedule] = await client.read_deployment_schedules(job.prefect_deployment_id)
    assert d.paused and not schedule.active


async def test_other_tenant_sees_nothing(ads: AdScheduler, catalog: Catalog) -> None:
    job = await ads.create(recurring_spec(catalog))
    other = AdScheduler(uuid.uuid4(), database_url=catalog.db_url, base_deployment=NO_BASE)
    for call in (
        other.get(job.id),
        other.pause(job.id),
        other.delete(job.id),
        other.run_now(job.id),
        other.runs(job.id),
    ):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(InvalidJobSpec) as err:
        await other.create(recurring_spec(catalog))
    assert err.value.fields == ["product_id"]
    assert await other.list_jobs() == []


async def test_slack_webhook_goes_to_a_block(ads: AdScheduler, catalog: Catalog) -> None:
    job = await ads.create(
        recurring_spec(catalog, export={"destination": "slack", "slack_webhook_url": SLACK_URL})
    )
    name = slack_block_name(job.id)
    assert job.parameters["export"]["slack_webhook_block"] == name
    assert SLACK_URL not in str(job.parameters)
    block = await SlackIncomingWebhook.aload(name)
    assert block.url.get_secret_value() == SLACK_URL
    async with get_client() as client:
        assert job.prefect_deployment_id is not None
        d = await client.read_deployment(job.prefect_deployment_id)
    assert "sekrit" not in str(d.parameters) + (d.description or "")
    # Round trip through the stored spec keeps the block.
    spec = await ads.spec_of(job.id)
    assert spec.export.slack_webhook_block == name and spec.export.slack_webhook_url is None
    await ads.delete(job.id)
    with pytest.raises(ValueError):
        await SlackIncomingWebhook.aload(name)


async def test_specific_and_uploaded_templates(
    ads: AdScheduler, catalog: Catalog, tmp_path
) -> None:
    from PIL import Image

    first, second = catalog.templates[:2]
    job = await ads.create(
        recurring_spec(
            catalog,
            templates={"mode": "specific", "templates": [str(first.id), second.storage_name]},
        )
    )
    assert job.template_mode == "specific"
    assert job.template_ids == [first.storage_name, second.storage_name]

    files = []
    for i, colour in enumerate(("red", "blue")):
        path = tmp_path / f"upload-{i}.png"
        Image.new("RGB", (64, 32), colour).save(path)
        files.append(str(path))
    spec = recurring_spec(catalog, templates={"mode": "uploaded", "files": files})
    uploaded = await ads.apply(spec)
    again = await ads.apply(spec)
    assert again.id == uploaded.id
    assert uploaded.template_mode == "uploaded" and uploaded.template_count == 2
    from blocks.storage import load_storage

    storage = await load_storage()
    for name in uploaded.template_ids or []:
        assert await storage.read(storage.template_path(name))
    # A job update that does not touch templates keeps the uploads.
    renamed = await ads.update(uploaded.id, description="new words")
    assert renamed.template_mode == "uploaded"
    assert renamed.template_ids == uploaded.template_ids


async def test_base_deployment_supplies_where(ads: AdScheduler, catalog: Catalog) -> None:
    """Work pool, pull steps and job variables come from `run-scheduled-job/<base>`."""
    from tests.scheduler.conftest import ensure_work_pool

    pool = f"pool-{uuid.uuid4().hex[:6]}"
    await ensure_work_pool(pool)
    base = f"base-{uuid.uuid4().hex[:6]}"
    pull = [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": "/opt/prefect/ad-scheduler"
            }
        }
    ]
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(dep.FLOW_NAME)
        await client.create_deployment(
            flow_id=flow_id,
            name=base,
            entrypoint=dep.ENTRYPOINT,
            work_pool_name=pool,
            pull_steps=pull,
            job_variables={"env": {"X": "1"}},
        )
    async with AdScheduler(
        catalog.tenant_id, database_url=catalog.db_url, base_deployment=base
    ) as scheduler:
        job = await scheduler.create(recurring_spec(catalog))
    assert job.prefect_deployment_id is not None
    async with get_client() as client:
        d = await client.read_deployment(job.prefect_deployment_id)
    assert d.work_pool_name == pool and d.pull_steps == pull
    assert d.job_variables == {"env": {"X": "1"}}


async def _scheduled_runs(deployment_id: uuid.UUID, at_least: int) -> list:
    """The deployment's Scheduled runs, once the server's scheduler has made `at_least`
    (it ticks every 1–2 s on the test server; this waits for that event, with a deadline)."""
    import anyio

    with anyio.fail_after(30):
        while True:
            runs = [r for r in await read_runs(deployment_id) if r.state_type == "SCHEDULED"]
            if len(runs) >= at_least:
                return runs
            await anyio.sleep(0.2)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_reapply_and_update_never_duplicate_scheduled_runs(
    ads: AdScheduler, catalog: Catalog
) -> None:
    spec = recurring_spec(catalog, schedule={"type": "recurring", "cron": "*/5 * * * *"})
    job = await ads.apply(spec)
    assert job.prefect_deployment_id is not None
    first = await _scheduled_runs(job.prefect_deployment_id, at_least=3)
    await ads.apply(spec)
    await ads.apply(spec)
    # Re-applying the same spec writes nothing: the very same runs are still there.
    again = await _scheduled_runs(job.prefect_deployment_id, at_least=3)
    assert {r.id for r in first} <= {r.id for r in again}
    # A real change PATCHes the deployment (Prefect regenerates its future runs) but keeps the
    # schedule row, so the scheduler's idempotency keys make no duplicates.
    await ads.update(job.id, description="edited: the deployment is PATCHed, not replaced")
    runs = await _scheduled_runs(job.prefect_deployment_id, at_least=3)
    times = [r.expected_start_time for r in runs]
    assert len(times) == len(set(times)), "duplicate scheduled runs"


async def test_concurrent_creates_of_one_name_leave_one_job_and_one_deployment(
    ads: AdScheduler, catalog: Catalog
) -> None:
    import asyncio

    spec = recurring_spec(catalog)

    async def create() -> object:
        async with AdScheduler(
            catalog.tenant_id, database_url=catalog.db_url, base_deployment=NO_BASE
        ) as other:
            return await other.create(spec)

    results = await asyncio.gather(create(), create(), return_exceptions=True)
    assert sum(isinstance(r, ConflictError) for r in results) == 1, results
    assert len(await tenant_jobs(catalog.db_url, catalog.tenant_id)) == 1
    assert len(await tenant_deployments(catalog.tenant_id)) == 1
