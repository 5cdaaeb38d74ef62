"""The prune-history flow on a real Prefect server: rows, files and run artifacts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.states import Scheduled

from blocks.storage import default_storage
from config import get_settings
from db.models import AdRun, ScheduledJobRun
from db.session import session_scope
from flows.retention import prune_history
from tests.retention.history import build_history, days_ago, present
from tests.support.factories import make_ad_run, make_product


@pytest.fixture
def app_database(pg_database_url: str, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> str:
    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    get_settings.cache_clear()
    return pg_database_url


@flow(name="retention-test-flow")
def _placeholder() -> None:  # pragma: no cover - never run, only its runs are created
    return None


async def _flow_run_started(started: datetime) -> uuid.UUID:
    """A flow run due at `started` (in the past), with an `ads-made` artifact."""
    async with get_client() as client:
        flow_run = await client.create_flow_run(
            _placeholder,
            name=f"old-{uuid.uuid4().hex[:6]}",
            state=Scheduled(scheduled_time=started),
        )
        await client.create_artifact(
            ArtifactCreate(
                key="ads-made", type="markdown", data="## Ads made", flow_run_id=flow_run.id
            )
        )
    return flow_run.id


async def _artifacts_of(flow_run_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
    return {a.flow_run_id for a in found if a.flow_run_id is not None}


async def test_prune_history_flow_deletes_rows_files_and_old_artifacts(
    prefect_api: str, app_database: str
) -> None:
    storage = default_storage()
    h = await build_history(app_database, storage)
    old_gone = await _flow_run_started(days_ago(200))
    old_with_ads = await _flow_run_started(days_ago(200))
    recent = await _flow_run_started(days_ago(2))
    async with session_scope(app_database) as session:
        product = await make_product(session, h.tenant_id)
        kept = await make_ad_run(
            session, h.tenant_id, product, "tpl.png", flow_run_id=old_with_ads, status="running"
        )

    before = datetime.now(UTC)
    report = await prune_history(retention_days=180, batch_size=3)

    # The cutoff is 180 days before the prune ran (NOW is the module's import: the suite may
    # have run for more than ten minutes since).
    window = timedelta(days=180)
    assert before - window - timedelta(seconds=1) <= report.cutoff <= datetime.now(UTC) - window
    # The session's database is shared: other tests' old rows may go too.
    assert report.ad_runs >= len(h.gone_ad_runs) and report.job_runs >= len(h.gone_job_runs)
    assert report.artifacts >= 1
    assert await _artifacts_of([old_gone, old_with_ads, recent]) == {old_with_ads, recent}
    assert await present(app_database, AdRun, {kept.id}) == {kept.id}
    assert await present(app_database, ScheduledJobRun, h.kept_job_runs) == h.kept_job_runs
    assert await present(app_database, AdRun, h.gone_ad_runs) == set()
