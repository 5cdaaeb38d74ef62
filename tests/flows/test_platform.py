"""Configuration and platform seams: DATABASE_URL as a block, strict provider limits, catalog sync,
the run artifact."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect_sqlalchemy import AsyncDriver, AsyncSqlAlchemyConnector, ConnectionComponents

from blocks.generators.local import LocalAdRenderer
from blocks.storage import default_storage
from config import get_settings
from db.models import AdRun, AdTemplate
from db.session import resolve_database_url, session_scope
from flows.limits import (
    ProviderLimit,
    ProviderLimitMissingError,
    ProviderSlots,
    ensure_provider_limit,
    rate_limit_name,
    rate_window,
)
from flows.sample_data import seed_sample_data
from flows.scheduled_job import run_scheduled_job
from flows.templates import sync_template_catalog
from tests.flows.support import job_with_templates

pytestmark = pytest.mark.usefixtures("prefect_api")


async def test_database_url_may_name_a_connector_block(tmp_path, monkeypatch) -> None:
    name = f"app-db-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "via-block.db"
    await AsyncSqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=AsyncDriver.SQLITE_AIOSQLITE, database=str(path)
        )
    ).asave(name)
    monkeypatch.setenv("DATABASE_URL", name)
    get_settings.cache_clear()
    try:
        url = await resolve_database_url()
        assert (url.drivername, url.database) == ("sqlite+aiosqlite", str(path))
        monkeypatch.setenv("DATABASE_URL", "no-such-block")
        get_settings.cache_clear()
        with pytest.raises(ValueError, match="no AsyncSqlAlchemyConnector block"):
            await resolve_database_url()
    finally:
        get_settings.cache_clear()


async def test_a_misnamed_provider_limit_fails_instead_of_doing_nothing() -> None:
    generator = LocalAdRenderer(provider_limit=f"never-created-{uuid.uuid4().hex[:8]}")
    async with get_client() as client:
        slots = ProviderSlots(generator, client, requests=1)
        with pytest.raises(ProviderLimitMissingError, match="does not exist"):
            async with slots.slot():
                pass
        await ensure_provider_limit(generator, client=client)
        async with ProviderSlots(generator, client, requests=1) as ok, ok.slot():
            limit = await client.read_global_concurrency_limit_by_name(generator.provider_limit)
            assert (limit.limit, limit.active_slots) == (generator.max_in_flight, 1)
        limit = await client.read_global_concurrency_limit_by_name(generator.provider_limit)
        assert limit.active_slots == 0  # handed back when the run has nothing left to do


async def test_a_run_s_slots_create_a_missing_limit_and_resize_a_changed_one() -> None:
    """`ensure=True` (what a run uses): the first acquisition's answer settles the limits, with
    no read of its own; a missing pair is created, a pair edited since is resized."""
    name = f"ensured-{uuid.uuid4().hex[:8]}"
    limit = ProviderLimit(name=name, max_in_flight=3, per_second=2.0)
    async with get_client() as client:
        async with ProviderSlots(limit, client, requests=2, ensure=True) as slots:
            async with slots.slot():
                created = await client.read_global_concurrency_limit_by_name(name)
                rate = await client.read_global_concurrency_limit_by_name(rate_limit_name(name))
                assert (created.limit, created.active_slots) == (3, 1)
                assert rate.limit == rate_window(120)[0]
        # The block now allows 5 in flight and 3 starts a second: the next run's slot resizes.
        bigger = ProviderLimit(name=name, max_in_flight=5, per_second=3.0)
        async with ProviderSlots(bigger, client, requests=1, ensure=True) as slots:
            async with slots.slot():
                resized = await client.read_global_concurrency_limit_by_name(name)
                assert (resized.limit, resized.active_slots) == (5, 1)
        rate = await client.read_global_concurrency_limit_by_name(rate_limit_name(name))
        assert rate.limit == rate_window(180)[0]
        assert (await client.read_global_concurrency_limit_by_name(name)).active_slots == 0


async def test_a_first_wave_larger_than_a_stale_limit_resizes_it_before_asking() -> None:
    """The block now allows 4 at once, the server still says 2: the run's first wave (4 slots
    in one call, which the server refuses with 422 on a limit of 2) resizes the limit first."""
    name = f"stale-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await ensure_provider_limit(ProviderLimit(name=name, max_in_flight=2), client=client)
        grown = ProviderLimit(name=name, max_in_flight=4)
        async with ProviderSlots(grown, client, requests=4, ensure=True) as slots:
            assert await slots.prime(4) == 4
            limit = await client.read_global_concurrency_limit_by_name(name)
            assert (limit.limit, limit.active_slots) == (4, 4)
        assert (await client.read_global_concurrency_limit_by_name(name)).active_slots == 0


@pytest.mark.parametrize("stored", [None, 4], ids=["missing", "shrunk-from-4"])
async def test_first_requests_at_once_settle_the_limit_before_any_is_granted(
    stored: int | None,
) -> None:
    """Four requests of a run at once, on a limit that is missing or bigger than the block's 1:
    none fails, the limit ends at 1, and never more than one request holds a slot."""
    name = f"at-once-{uuid.uuid4().hex[:8]}"
    holding, peak = 0, 0
    async with get_client() as client:
        if stored is not None:
            await ensure_provider_limit(
                ProviderLimit(name=name, max_in_flight=stored), client=client
            )
        async with ProviderSlots(
            ProviderLimit(name=name, max_in_flight=1), client, requests=4, ensure=True
        ) as slots:

            async def one() -> None:
                nonlocal holding, peak
                async with slots.slot():
                    holding += 1
                    peak = max(peak, holding)
                    await asyncio.sleep(0.05)  # a request in flight
                    holding -= 1
                slots.done()

            await asyncio.gather(*(one() for _ in range(4)))
        limit = await client.read_global_concurrency_limit_by_name(name)
    assert peak == 1
    assert (limit.limit, limit.active_slots) == (1, 0)


@pytest.mark.usefixtures("use_database", "data_dir")
async def test_sync_catalogs_new_files_and_deactivates_vanished_ones(tenant_id) -> None:
    storage = default_storage()
    await seed_sample_data(tenant_id, storage, templates=3)
    local = storage.local_path(storage.template_path("sample-02.png"))
    assert local is not None
    local.unlink()
    await storage.write(storage.template_path("uploads/abc.png"), b"job upload, not library")
    await storage.write(
        storage.template_path("new-one.png"),
        (await storage.read(storage.template_path("sample-01.png"))),
    )
    report = await sync_template_catalog(tenant_id, storage)
    assert (report.added, report.deactivated) == (["new-one.png"], ["sample-02.png"])
    again = await sync_template_catalog(tenant_id, storage)
    assert (again.added, again.deactivated, again.reactivated) == ([], [], [])
    async with session_scope() as s:
        active = set(
            (
                await s.scalars(
                    sa.select(AdTemplate.storage_name).where(
                        AdTemplate.tenant_id == tenant_id, AdTemplate.active.is_(True)
                    )
                )
            ).all()
        )
    assert active == {"sample-01.png", "sample-03.png", "new-one.png"}


@pytest.mark.usefixtures("use_database", "data_dir")
async def test_run_publishes_an_ads_table_artifact_and_a_readable_name(
    tenant_id, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import progress

    # A progress bar from the start (a real run shows one once it has worked 2 s).
    monkeypatch.setattr(progress, "PROGRESS_DELAY_S", 0.0)
    job = await job_with_templates(tenant_id, templates=2, template_count=2, name="spring-ads")
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        # This run's own: the session's server holds every test's artifacts, past one page.
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert run.name.startswith("spring-ads · ")
    assert {"job:spring-ads", f"product:{job.product_id}", f"brand:{job.brand_id}"} <= set(run.tags)
    mine = [a for a in artifacts if a.flow_run_id == flow_run_id]
    table = next(a for a in mine if a.key == "ads-made")
    assert "sample-01.png" in str(table.data) and "sample-02.png" in str(table.data)
    assert any(a.type == "progress" and a.data == 100.0 for a in mine)


@pytest.mark.usefixtures("use_database", "data_dir")
async def test_a_run_whose_ads_table_is_refused_completes_with_its_ads(
    tenant_id, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The API refuses the artifact (stood in for: one endpoint of the real server cannot be made
    # to fail alone). The table is published while the run finishes: its failure is the run's
    # warning, not the run's end.
    import httpx

    from flows import artifacts

    async def refused(**_: object) -> None:
        request = httpx.Request("POST", "http://127.0.0.1/api/artifacts/")
        raise httpx.HTTPStatusError("503", request=request, response=httpx.Response(503))

    monkeypatch.setattr(artifacts, "acreate_markdown_artifact", refused)
    job = await job_with_templates(tenant_id, templates=2, template_count=2)
    with caplog.at_level("WARNING"):
        state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed(), state.message
    async with session_scope() as s:
        made = await s.scalar(
            sa.select(sa.func.count()).select_from(AdRun).where(AdRun.scheduled_job_id == job.id)
        )
    assert made == 2
    assert "the run's ads table was not published" in caplog.text
    # Sent and awaited by the final-state hooks: nothing left behind.
    assert not artifacts._prepared and not artifacts._publishing
