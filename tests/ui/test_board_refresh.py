"""The job board at scale, against the session's real Prefect server (no browser): each ad is
decoded once for the board, ever, and refreshes asked for at once are coalesced without losing
the last change."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from blocks.storage import default_storage
from db.models import GeneratedAd, JobBoardRefresh, ScheduledJobRun
from db.session import session_scope
from flows import thumbnails
from flows.job_board import (
    board_key,
    refresh_boards_behind,
    refresh_job_board,
    request_job_board_refresh,
)
from tests.support.factories import make_ad_run, make_job, make_product

pytestmark = pytest.mark.usefixtures("prefect_api", "data_dir")


def _png(size: int, color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


async def _boards(tenant_id: uuid.UUID) -> list[str]:
    """Every published version of the tenant's board, newest first."""
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[board_key(tenant_id)])),
            sort=ArtifactSort.CREATED_DESC,
        )
    return [str(a.data) for a in found]


async def test_a_board_picture_is_made_once_then_read_from_the_database(
    pg_app: str, tenant_id: uuid.UUID
) -> None:
    storage = default_storage()
    async with session_scope() as s:
        product = await make_product(s, tenant_id, name="Shoe")
        job = await make_job(s, tenant_id, product, name="weekly")
        run = ScheduledJobRun(
            scheduled_job_id=job.id,
            tenant_id=tenant_id,
            status="completed",
            started_at=datetime.now(UTC) - timedelta(minutes=5),
            flow_run_id=uuid.uuid4(),
        )
        s.add(run)
        await s.flush()
        await make_ad_run(s, tenant_id, product, "a.png", job_run=run, ads=2)
        paths = list(
            (
                await s.scalars(
                    sa.select(GeneratedAd.storage_path).where(GeneratedAd.tenant_id == tenant_id)
                )
            ).all()
        )
    for i, path in enumerate(paths):  # full-size ads, as a provider returns them
        await storage.write(path, _png(1080, (200, 40 * i, 30)))

    await refresh_job_board(tenant_id, storage)
    (first,) = await _boards(tenant_id)
    assert first.count("data:image/jpeg;base64,") == 2
    async with session_scope() as s:
        stored = (
            await s.scalars(
                sa.select(GeneratedAd.board_thumbnail).where(GeneratedAd.tenant_id == tenant_id)
            )
        ).all()
    assert len(stored) == 2 and all(uri and uri in first for uri in stored)

    # Without the ads in storage and without this process's thumbnails, the next board still
    # shows both pictures: they come from the database, nothing is read back or decoded.
    for path in paths:
        await storage.delete_file(path)
    thumbnails._CACHE.clear()
    await refresh_job_board(tenant_id, storage)
    newest = (await _boards(tenant_id))[0]
    assert newest.count("data:image/jpeg;base64,") == 2
    assert "could not be read" not in newest


async def test_remember_makes_the_board_picture_from_the_same_decode() -> None:
    path = f"ads/t/{uuid.uuid4()}/variation-0.png"
    thumbnails.remember(path, _png(540, (10, 120, 200)))
    board = await thumbnails.remembered(path, thumbnails.BOARD_THUMBNAIL_WIDTH)
    run = await thumbnails.remembered(path, thumbnails.THUMBNAIL_WIDTH)
    assert board and run and board != run
    with Image.open(io.BytesIO(_b64(board))) as small:
        assert max(small.size) == thumbnails.BOARD_THUMBNAIL_WIDTH
    assert await thumbnails.remembered("ads/never-made.png", 64) is None


def _b64(uri: str) -> bytes:
    import base64

    return base64.b64decode(uri.split(",", 1)[1])


async def test_refreshes_asked_at_once_are_coalesced_and_the_last_change_is_shown(
    pg_app: str, tenant_id: uuid.UUID
) -> None:
    """Twelve changes, each followed by its refresh request, all at once (as runs ending
    together do): fewer boards are published than asked for, and once the callers are done
    (and the reconciler's sweep has run) the newest board shows every change."""
    async with session_scope() as s:
        product = await make_product(s, tenant_id, name="Shoe")

    async def change_then_ask(i: int) -> uuid.UUID | None:
        async with session_scope() as s:
            await make_job(s, tenant_id, product, name=f"job-{i:02d}")
        return await request_job_board_refresh(tenant_id)

    published = [p for p in await asyncio.gather(*(change_then_ask(i) for i in range(12))) if p]
    await refresh_boards_behind()
    boards = await _boards(tenant_id)
    assert 1 <= len(published) <= len(boards) < 12
    assert all(f"job-{i:02d}" in boards[0] for i in range(12))
    assert "Job board: 12 jobs" in boards[0]
    async with session_scope() as s:
        row = await s.get(JobBoardRefresh, tenant_id)
    # Twelve requests (and one more if the sweep had something to cover), every one covered.
    assert row is not None and row.requested in (12, 13) and row.published == row.requested
    assert row.holder is None
