"""Thumbnails and the board's content without a browser: bounds, fallbacks, what is read."""

from __future__ import annotations

import base64
import io
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from blocks.storage import default_storage
from db.models import ProductTemplateUsage, ScheduledJobRun
from db.queries.board import ADS_PER_JOB, read_board
from db.session import session_scope
from flows.artifacts import render_run_markdown
from flows.job_board import render_board_markdown
from flows.pipeline import AdRunOutcome, AdSummary, PipelineResult
from flows.thumbnails import (
    RUN_ARTIFACT_MAX_BYTES,
    THUMBNAIL_MAX_BYTES,
    THUMBNAIL_WIDTH,
    Thumbnails,
    make_thumbnails,
    remember,
    thumbnail_data_uri,
)
from tests.support.factories import make_ad_run, make_job, make_product, make_templates


def _png(size: int = 1080, *, alpha: bool = False, noise: bool = False) -> bytes:
    mode = "RGBA" if alpha else "RGB"
    if noise:
        rng = random.Random(7)
        picture = Image.frombytes(mode, (size, size), rng.randbytes(size * size * len(mode)))
    else:
        picture = Image.new(mode, (size, size), (200, 30, 30, 0) if alpha else (200, 30, 30))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_thumbnail_is_a_small_jpeg_within_its_bounds() -> None:
    uri = thumbnail_data_uri(_png(1080))
    assert uri is not None and len(uri) <= THUMBNAIL_MAX_BYTES
    assert max(_decode(uri).size) == THUMBNAIL_WIDTH


def test_a_transparent_ad_is_drawn_on_white_not_black() -> None:
    uri = thumbnail_data_uri(_png(400, alpha=True))
    assert uri is not None
    r, g, b = _decode(uri).convert("RGB").getpixel((5, 5))
    assert min(r, g, b) > 240


def test_an_ad_too_detailed_for_the_bound_shrinks_then_gives_up() -> None:
    noisy = _png(600, noise=True)
    shrunk = thumbnail_data_uri(noisy, max_bytes=3_000)
    assert shrunk is not None and max(_decode(shrunk).size) == THUMBNAIL_WIDTH // 2
    assert thumbnail_data_uri(noisy, max_bytes=500) is None
    assert thumbnail_data_uri(b"not an image") is None


@pytest.fixture
def storage(data_dir):
    return default_storage()


async def test_a_thumbnail_made_at_generation_is_not_read_back(storage) -> None:
    """Generation hands the ad's bytes over as it stores them: the run artifact does not read
    the ad back from storage (here it is not even there) nor decode it again; a thumbnail still
    being made is waited for."""
    path = f"ads/t/{uuid.uuid4()}/variation-0.png"
    remember(path, _png(540))  # returns at once: generation does not wait for the picture
    thumbs = await make_thumbnails(storage, [path])
    assert thumbs.unreadable == 0
    assert max(_decode(thumbs.uris[path]).size) == THUMBNAIL_WIDTH
    # Bytes that are no picture are remembered as such, never raised.
    remember("ads/t/broken.png", b"not an image")
    assert (await make_thumbnails(storage, ["ads/t/broken.png"])).unreadable == 1


async def test_thumbnails_stay_within_the_artifact_budget(storage) -> None:
    paths = []
    for i in range(5):
        path = f"ads/t/{uuid.uuid4()}/variation-{i}.png"
        await storage.write(path, _png(540))
        paths.append(path)
    one = len(thumbnail_data_uri(_png(540)) or "")
    thumbs = await make_thumbnails(storage, [*paths, "ads/missing.png"], budget=2 * one + 10)
    assert list(thumbs.uris) == paths[:2]  # first come, first served
    assert thumbs.over_budget == 3 and thumbs.unreadable == 1

    result = PipelineResult(
        outcomes=[
            AdRunOutcome(
                ad_run_id=uuid.uuid4(),
                template="t.png",
                ok=True,
                ads=[AdSummary(storage_path=p, headline=f"H{i}") for i, p in enumerate(paths)],
            )
        ]
    )
    markdown = render_run_markdown("job", result, thumbs)
    assert markdown.count("data:image/jpeg;base64,") == 2
    assert f"`{paths[4]}`" in markdown  # over the budget: the path instead
    assert f"bounded to {RUN_ARTIFACT_MAX_BYTES // 1000} KB" in markdown
    assert "1 ads could not be read" in markdown


def test_without_a_thumbnail_an_ad_with_a_public_url_is_a_link() -> None:
    ad = AdSummary(storage_path="ads/x.png", headline="Hi", url="https://cdn.example/ads/x.png")
    result = PipelineResult(
        outcomes=[AdRunOutcome(ad_run_id=uuid.uuid4(), template="t", ok=True, ads=[ad])]
    )
    markdown = render_run_markdown("job", result, Thumbnails(uris={}))
    assert '<a href="https://cdn.example/ads/x.png">open the ad</a>' in markdown
    with_picture = render_run_markdown("job", result, Thumbnails(uris={"ads/x.png": "data:x"}))
    assert '<a href="https://cdn.example/ads/x.png"><img src="data:x"' in with_picture


async def test_board_reads_every_live_job_its_last_run_latest_ads_and_template_counts(
    sqlite_database_url: str, tenant_id: uuid.UUID
) -> None:
    now = datetime.now(UTC)
    async with session_scope(sqlite_database_url) as s:
        product = await make_product(s, tenant_id, name="Shoe")
        await make_templates(s, tenant_id, 5, prefix="lib")
        await make_templates(s, tenant_id, 1, prefix="off", active=False)
        job = await make_job(s, tenant_id, product, name="a-job", max_runs=4, runs_completed=1)
        gone = await make_job(s, tenant_id, product, name="gone", deleted_at=now)
        completed = ScheduledJobRun(
            scheduled_job_id=job.id,
            tenant_id=tenant_id,
            status="completed",
            started_at=now - timedelta(hours=2),
            flow_run_id=uuid.uuid4(),
        )
        skipped = ScheduledJobRun(
            scheduled_job_id=job.id,
            tenant_id=tenant_id,
            status="skipped",
            skip_reason="misfire",
            logs="started 2 h after its time: missed",
            started_at=now - timedelta(hours=1),
            flow_run_id=uuid.uuid4(),
        )
        s.add_all([completed, skipped])
        await s.flush()
        await make_ad_run(s, tenant_id, product, "lib-0000.png", job_run=completed, ads=3)
        await make_ad_run(s, tenant_id, product, "lib-0001.png", job_run=completed, ads=3)
        await make_ad_run(s, tenant_id, product, "lib-0002.png", job_run=completed, status="failed")
        for name, uses in (("lib-0000.png", 1), ("lib-0001.png", 2), ("lib-0003.png", 0)):
            s.add(
                ProductTemplateUsage(
                    product_id=product.id,
                    template_storage_name=name,
                    tenant_id=tenant_id,
                    use_count=uses,
                )
            )
        other = await make_product(s, uuid.uuid4(), name="Not mine")
        await make_job(s, other.tenant_id, other, name="not-mine")
    async with session_scope(sqlite_database_url) as s:
        board = await read_board(s, tenant_id)
    assert [j.name for j in board.jobs] == ["a-job"]  # deleted and other tenants' jobs: no
    assert gone.id not in {j.id for j in board.jobs}
    (shown,) = board.jobs
    assert shown.last_run is not None and shown.last_run.status == "skipped"
    # The latest ads come from the latest completed run; a skipped run made none.
    assert shown.latest_ads_total == 6 and len(shown.latest_ads) == ADS_PER_JOB
    assert {a.template for a in shown.latest_ads} == {"lib-0000.png", "lib-0001.png"}
    (counts,) = board.products
    # Used: 2 (a claim with use_count 0 is not a use yet). Unused is what `unused` mode can pick
    # now: 5 active - 2 used - 1 held by a claim in flight = 2.
    assert (counts.product, counts.used, counts.unused) == ("Shoe", 2, 2)

    markdown = render_board_markdown(board)
    assert "| 1 / 4 |" in markdown and "missed" in markdown and "+2 more" in markdown
