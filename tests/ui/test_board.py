"""The job board and the run artifact in a real browser: every job, its last run, its ads as
thumbnails that load (`naturalWidth > 0`) from inline data — local-folder storage, no URL."""

from __future__ import annotations

import os
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import ArtifactSort

from blocks.storage import default_storage
from db.session import session_scope
from domain.params import AdParameters, JobParameters
from flows.job_board import board_key, refresh_job_board
from flows.sample_data import seed_sample_data
from flows.scheduled_job import run_scheduled_job
from tests.support.factories import make_job
from tests.ui.browser import artifact_url, loaded_images, open_page, wait_for_text

pytestmark = pytest.mark.usefixtures("ui_url", "data_dir")


async def _latest(key: str, flow_run_id: uuid.UUID | None = None) -> Artifact:
    artifact_filter = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
    if flow_run_id is not None:
        artifact_filter.flow_run_id = ArtifactFilterFlowRunId(any_=[flow_run_id])
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=artifact_filter, sort=ArtifactSort.CREATED_DESC, limit=1
        )
    assert found, f"no artifact with key {key}"
    return found[0]


async def test_board_shows_every_job_with_thumbnails_that_load(
    sqlite_app: str, tenant_id: uuid.UUID, ui_url: str, browser
) -> None:
    storage = default_storage()
    _brand, product, _ = await seed_sample_data(tenant_id, storage, templates=8)
    params = JobParameters(ad=AdParameters(variations=2)).model_dump(mode="json")
    async with session_scope() as session:
        ran = await make_job(
            session,
            tenant_id,
            product,
            name="weekly | monday",
            template_count=2,
            parameters=params,
            timezone="Europe/Berlin",
            max_runs=8,
        )
        await make_job(
            session,
            tenant_id,
            product,
            name="holiday-push",
            status="paused",
            pause_note="paused from the UI: <b>holiday</b> freeze",
            parameters=params,
            cron_expression="30 8 * * *",
            timezone="America/New_York",
        )
    state = await run_scheduled_job(ran.id, return_state=True)
    assert state.is_completed(), state.message

    # The run's own final-state hook refreshed the board: it shows the run as completed.
    board = await _latest(board_key(tenant_id))
    assert "✅ completed" in board.data and "holiday-push" in board.data
    # Run directly, it is a manual run: recorded, not counted toward max_runs.
    assert "| 0 / 8 |" in board.data and "manual run" in board.data
    assert "&lt;b&gt;holiday&lt;/b&gt; freeze" in board.data  # a note is data, not markup
    assert board.data.count("data:image/jpeg;base64,") == 4  # 2 templates x 2 variations
    assert "| Northwind Outdoors | Trail Runner 2 | 2 | 6 |" in board.data.replace("  ", " ")

    page = await open_page(browser, artifact_url(ui_url, board.id))
    text = await wait_for_text(
        page, "weekly | monday", "holiday-push", "paused from the UI", "Templates per product"
    )
    assert "<b>" in text  # shown as text
    images = await loaded_images(page, "img[src^='data:image/jpeg']", at_least=4)
    assert len(images) == 4
    assert "CET" in text and "America/New_York" in text  # each job in its own zone
    if shots := os.environ.get("AD_SCHEDULER_UI_SCREENSHOTS"):
        await page.screenshot(path=f"{shots}/job-board.png", full_page=True)
    await page.close()

    # The run artifact: each ad as a picture, with its headline and template beside it.
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    ads_made = await _latest("ads-made", flow_run_id)
    page = await open_page(browser, artifact_url(ui_url, ads_made.id))
    text = await wait_for_text(page, "Ads made", "4 ads from 2 templates")
    images = await loaded_images(page, "img[src^='data:image/jpeg']", at_least=4)
    assert len(images) == 4 and all(i["naturalWidth"] > 0 for i in images)
    assert text.count("sample-0") >= 4  # the template beside every ad
    await page.close()


async def test_board_of_a_tenant_without_jobs_says_so(
    sqlite_app: str, tenant_id: uuid.UUID, ui_url: str, browser
) -> None:
    artifact_id = await refresh_job_board(tenant_id)
    page = await open_page(browser, artifact_url(ui_url, artifact_id))
    await wait_for_text(page, "Job board: 0 jobs", "No jobs yet", "No products yet")
    await page.close()
