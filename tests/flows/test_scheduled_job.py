"""run_scheduled_job end to end: real Prefect server (PostgreSQL), real databases, real PNGs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from PIL import Image
from prefect.client.orchestration import get_client

from db.models import AdRun, GeneratedAd, ProductTemplateUsage, ScheduledJob
from db.session import session_scope
from db.types import utcnow
from domain.params import AdParameters, JobParameters
from flows.scheduled_job import run_scheduled_job
from tests.flows.support import (
    deployment_for,
    execute,
    job_runs_of,
    job_with_templates,
    scheduled_run,
)

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


async def _used(product_id) -> dict[str, int]:
    async with session_scope() as s:
        rows = (
            await s.execute(
                sa.select(
                    ProductTemplateUsage.template_storage_name, ProductTemplateUsage.use_count
                ).where(ProductTemplateUsage.product_id == product_id)
            )
        ).all()
    return {r[0]: r[1] for r in rows}


def _params(variations: int = 2) -> dict:
    return JobParameters(ad=AdParameters(variations=variations)).model_dump(mode="json")


async def test_job_makes_one_ad_run_per_template_and_rotates(tenant_id, data_dir) -> None:
    job = await job_with_templates(
        tenant_id, templates=10, template_count=5, parameters=_params(variations=2)
    )
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed(), state.message
    async with session_scope() as s:
        ad_runs = list(
            (await s.scalars(sa.select(AdRun).where(AdRun.scheduled_job_id == job.id))).all()
        )
        ads = list(
            (
                await s.scalars(
                    sa.select(GeneratedAd).where(GeneratedAd.ad_run_id.in_([a.id for a in ad_runs]))
                )
            ).all()
        )
    assert len(ad_runs) == 5 and {a.status for a in ad_runs} == {"completed"}
    assert len(ads) == 10
    for ad in ads:
        with Image.open(data_dir / "storage" / ad.storage_path) as image:
            assert image.format == "PNG" and image.size == (ad.width, ad.height)
        # The run's final hook stored each ad's board picture, made from the bytes it held.
        assert ad.board_thumbnail and ad.board_thumbnail.startswith("data:image/jpeg;base64,")
    first = set(await _used(job.product_id))
    assert first == {a.template_storage_name for a in ad_runs}

    runs = await job_runs_of(job.id)
    assert len(runs) == 1
    row = runs[0]
    assert (row.status, row.trigger, row.prefect_state) == ("completed", "manual", "Completed")
    assert sorted(row.ad_run_ids or []) == sorted(a.id for a in ad_runs)
    assert sorted(row.templates_used or []) == sorted(first)

    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed()
    second = set(await _used(job.product_id)) - first
    assert len(second) == 5  # the next run rotated to the five templates not used yet


async def test_partial_run_completes_naming_the_template_that_failed(tenant_id, data_dir) -> None:
    job = await job_with_templates(
        tenant_id, templates=3, template_count=3, parameters=_params(variations=1)
    )
    broken = data_dir / "storage" / "templates" / "sample-02.png"
    broken.write_bytes(b"not an image")
    state = await run_scheduled_job(job.id, return_state=True)
    # Ads were made from two of three templates: the run completes (and counts); the third
    # is named in the run's error and set aside (no unused template is left to replace it).
    assert state.is_completed(), state.message
    assert "sample-02.png" in (state.message or "")  # shown on the run in the Prefect UI
    assert set(await _used(job.product_id)) == {"sample-01.png", "sample-03.png"}
    row = (await job_runs_of(job.id))[0]
    assert row.status == "completed"
    assert "1 of 3 templates failed" in (row.error_message or "")
    assert "sample-02.png" in (row.error_message or "")
    assert "2 ads from 2/3 templates" in (row.logs or "") and "set aside" in (row.logs or "")
    assert sorted(row.templates_used or []) == ["sample-01.png", "sample-03.png"]


async def test_misfire_and_duplicate_slot_are_skipped_and_recorded(tenant_id) -> None:
    job = await job_with_templates(
        tenant_id, templates=2, template_count=1, misfire_grace_seconds=60, parameters=_params(1)
    )
    deployment_id = await deployment_for(f"misfire-{tenant_id.hex[:8]}")

    stale = await scheduled_run(deployment_id, job.id, utcnow() - timedelta(days=1))
    state = await execute(stale)
    assert state.is_completed() and state.name == "Skipped"

    slot = utcnow() - timedelta(seconds=5)
    first = await execute(await scheduled_run(deployment_id, job.id, slot))
    dup = await execute(await scheduled_run(deployment_id, job.id, slot))
    assert first.is_completed() and first.name == "Completed"
    assert dup.name == "Skipped"

    rows = {r.flow_run_id: r for r in await job_runs_of(job.id)}
    assert rows[stale.id].status == "skipped" and rows[stale.id].skip_reason == "misfire"
    assert "missed" in (rows[stale.id].logs or "")
    reasons = sorted((r.status, r.skip_reason or "") for r in rows.values())
    assert reasons == [("completed", ""), ("skipped", "duplicate_slot"), ("skipped", "misfire")]
    assert all(r.trigger == "schedule" for r in rows.values())
    async with get_client() as client:
        # The provider slots a run opens before it knows it will be skipped go back unused.
        limit = await client.read_global_concurrency_limit_by_name("ad-provider-local")
        assert limit.active_slots == 0
        # A run is renamed once its first wave of requests is out; a skipped run all the same
        # (its rename waits for the run's end).
        for flow_run_id in (
            stale.id,
            first.state_details.flow_run_id,
            dup.state_details.flow_run_id,
        ):
            named = await client.read_flow_run(flow_run_id)
            assert named.name.startswith(f"{job.name} · "), named.name
            assert f"job:{job.name}" in named.tags


async def test_max_runs_completes_the_job_and_deactivates_its_schedule(tenant_id) -> None:
    job = await job_with_templates(
        tenant_id, templates=4, template_count=1, max_runs=2, parameters=_params(1)
    )
    from prefect.schedules import Cron

    deployment = await run_scheduled_job.ato_deployment(  # type: ignore[attr-defined]
        name=f"maxruns-{tenant_id.hex[:8]}",
        parameters={"job_id": str(job.id)},
        schedules=[Cron("0 9 * * *", timezone="Europe/Berlin", slug="job-schedule")],
    )
    deployment_id = await deployment.aapply()
    async with session_scope() as s:
        row = await s.get(ScheduledJob, job.id)
        assert row is not None
        row.prefect_deployment_id = deployment_id

    manual = await run_scheduled_job(job.id, return_state=True)  # recorded, not counted
    assert manual.is_completed()
    for i in range(2):
        state = await execute(
            await scheduled_run(
                deployment_id, job.id, utcnow() - timedelta(seconds=10 + i), tags=["auto-scheduled"]
            )
        )
        assert state.is_completed(), state.message

    async with session_scope() as s:
        stored = await s.get(ScheduledJob, job.id)
    assert stored is not None
    assert (stored.status, stored.runs_completed, stored.next_run_at) == ("completed", 2, None)
    async with get_client() as client:
        schedules = await client.read_deployment_schedules(deployment_id)
    assert schedules and not any(s.active for s in schedules)


async def test_missing_job_fails_clearly(tenant_id) -> None:
    missing = uuid.uuid4()
    state = await run_scheduled_job(missing, return_state=True)
    assert state.is_failed() and f"scheduled job {missing} not found" in (state.message or "")


async def test_consecutive_failures_pause_the_job_and_its_deployment(tenant_id, data_dir) -> None:
    job = await job_with_templates(
        tenant_id, templates=2, template_count=1, max_consecutive_failures=2, parameters=_params(1)
    )
    deployment = await run_scheduled_job.ato_deployment(  # type: ignore[attr-defined]
        name=f"pause-{tenant_id.hex[:8]}", parameters={"job_id": str(job.id)}
    )
    deployment_id = await deployment.aapply()
    async with session_scope() as s:
        row = await s.get(ScheduledJob, job.id)
        assert row is not None
        row.prefect_deployment_id = deployment_id
    # A failure that is not the templates' own (the product photo): they are only released.
    (data_dir / "storage" / "products" / "trail-runner-2.png").write_bytes(b"broken")
    for i in range(2):
        state = await execute(
            await scheduled_run(
                deployment_id, job.id, utcnow() - timedelta(seconds=10 + i), tags=["auto-scheduled"]
            )
        )
        assert state.is_failed()
    async with session_scope() as s:
        stored = await s.get(ScheduledJob, job.id)
    assert stored is not None and stored.status == "paused"
    assert "2 consecutive failed runs" in (stored.pause_note or "")
    async with get_client() as client:
        assert (await client.read_deployment(deployment_id)).paused


@pytest.mark.parametrize("job_block", [None, "http-ad-generator/none-such"])
async def test_the_generator_tag_is_a_hint_the_job_decides(tenant_id, job_block) -> None:
    # The deployment's tag (copied to its runs) names a block that does not exist: it starts
    # loading before the job is read, and only the job's own parameters decide whether it counts.
    import prefect

    from domain.tags import generator_tag

    params = JobParameters(ad=AdParameters(variations=1, generator_block=job_block))
    job = await job_with_templates(
        tenant_id, templates=2, template_count=1, parameters=params.model_dump(mode="json")
    )
    with prefect.tags(generator_tag("http-ad-generator/none-such")):
        state = await run_scheduled_job(job.id, return_state=True)
    if job_block is None:  # the offline renderer: the stale tag's failed load is dropped
        assert state.is_completed(), state.message
        (row,) = await job_runs_of(job.id)
        assert row.status == "completed" and row.templates_used
    else:  # the same block: its load is the run's, and so is its failure
        assert state.is_failed()
        assert "none-such" in (state.message or "")


async def test_a_failed_final_step_is_logged_and_the_later_steps_still_run(monkeypatch) -> None:
    from prefect import flow
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows import scheduled_job

    ran: list[str] = []

    async def broken(flow: object, flow_run: object, state: object) -> None:
        ran.append("broken")
        raise RuntimeError("the board is down")

    async def later(flow: object, flow_run: object, state: object) -> None:
        ran.append("later")

    monkeypatch.setattr(scheduled_job, "_FINAL_STEPS", [broken, later])

    @flow(on_completion=[scheduled_job.finish_run])
    async def tiny() -> int:
        return 1

    state = await tiny(return_state=True)
    assert state.is_completed() and ran == ["broken", "later"]
    await APILogHandler.aflush()
    async with get_client() as client:
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    messages = [entry.message for entry in logs]
    [failure] = [m for m in messages if m.startswith("the final-state step broken failed")]
    assert "RuntimeError: the board is down" in failure  # with its traceback
    assert "Hook 'finish_run' finished running successfully" in messages, messages
