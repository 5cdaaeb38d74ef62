"""Fixtures for the export tests: local fake providers, saved blocks, seeded ad runs."""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from PIL import Image
from prefect.filesystems import LocalFileSystem

from blocks.email_resend import ResendEmail
from blocks.slack_webhook import SlackIncomingWebhook
from blocks.storage import AdStorage
from config import get_settings
from db.models import GeneratedAd, ScheduledJobRun
from db.session import session_scope
from domain.params import ExportSettings
from flows.exports import sending
from tests.support.factories import make_ad_run, make_brand, make_job, make_product
from tests.support.http_fake import FakeResend, FakeSlackWebhook

RUN_DAY = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    """A fake Resend API on 127.0.0.1 with a fresh API key."""
    fake = FakeResend(api_key=f"re_test_{uuid.uuid4().hex}")
    fake.server.start()
    yield fake
    fake.server.stop()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackWebhook]:
    """A fake Slack incoming webhook on 127.0.0.1 with a fresh secret path."""
    fake = FakeSlackWebhook()
    fake.server.start()
    yield fake
    fake.server.stop()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the retry loop asked for (nothing really sleeps)."""
    asked: list[float] = []

    async def record(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(sending, "SENDING", sending.SendSettings(sleep=record))
    return asked


@dataclass
class SavedBlocks:
    email: str
    slack: str


@pytest_asyncio.fixture
async def saved_blocks(
    prefect_api: str, fake_resend: FakeResend, fake_slack: FakeSlackWebhook
) -> SavedBlocks:
    """A Resend email block and a Slack webhook block pointing at the fakes, saved on Prefect."""
    suffix = uuid.uuid4().hex[:10]
    names = SavedBlocks(email=f"email-{suffix}", slack=f"slack-{suffix}")
    await ResendEmail(
        api_key=fake_resend.api_key,
        from_address="Ads <ads@example.test>",
        reply_to="marketing@example.test",
        base_url=fake_resend.url,
        requests_per_second=50,
    ).save(names.email)
    await SlackIncomingWebhook(url=fake_slack.webhook_url, messages_per_second=50).save(names.slack)
    return names


def settings_for(blocks: SavedBlocks, **kw: object) -> ExportSettings:
    """Export settings for both channels with the saved blocks."""
    values: dict[str, object] = {
        "destination": "both",
        "email_recipients": ["team@example.com", "lead@example.com"],
        "email_block": blocks.email,
        "slack_webhook_block": blocks.slack,
    }
    values.update(kw)
    return ExportSettings.model_validate(values)


@dataclass
class SeededRun:
    tenant_id: uuid.UUID
    ad_run_id: uuid.UUID
    job_run_id: uuid.UUID
    job_id: uuid.UUID
    product_id: uuid.UUID
    flow_run_id: uuid.UUID
    ad_paths: list[str]


def png_bytes(size: int = 48, *, noisy: bool = False, seed: int = 0) -> bytes:
    """A small real PNG; `noisy` makes it incompressible (its size is about size²·3 bytes)."""
    image = Image.new("RGB", (size, size), (15, 118, 110))
    if noisy:
        rng = random.Random(seed)
        image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def seed_runs(
    db_url: str,
    tenant_id: uuid.UUID,
    storage_root: Path,
    *,
    templates: tuple[str, ...] = ("summer-sale.png",),
    ads: int = 3,
    image_size: int = 48,
    noisy: bool = False,
) -> list[SeededRun]:
    """One job run with one completed ad run per template, and the ad images in storage."""
    seeded: list[SeededRun] = []
    async with session_scope(db_url) as session:
        brand = await make_brand(session, tenant_id, name="Acme Outdoors")
        product = await make_product(session, tenant_id, brand, name="Trail Runner 2")
        job = await make_job(session, tenant_id, product, name="weekly-trail")
        flow_run_id = uuid.uuid4()
        job_run = ScheduledJobRun(
            scheduled_job_id=job.id, tenant_id=tenant_id, status="running", flow_run_id=flow_run_id
        )
        session.add(job_run)
        await session.flush()
        for template in templates:
            ad_run = await make_ad_run(
                session,
                tenant_id,
                product,
                template,
                job_run=job_run,
                ads=ads,
                completed_at=RUN_DAY,
            )
            paths = list(
                (
                    await session.scalars(
                        sa.select(GeneratedAd.storage_path)
                        .where(GeneratedAd.ad_run_id == ad_run.id)
                        .order_by(GeneratedAd.variation_index)
                    )
                ).all()
            )
            seeded.append(
                SeededRun(tenant_id, ad_run.id, job_run.id, job.id, product.id, flow_run_id, paths)
            )
    for run in seeded:
        for index, path in enumerate(run.ad_paths):
            target = storage_root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png_bytes(image_size, noisy=noisy, seed=index))
    return seeded


@pytest.fixture
def storage_root(data_dir: Path) -> Path:
    """The default local storage folder (under the test's data dir)."""
    root = data_dir / "storage"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest_asyncio.fixture
async def public_storage(
    prefect_api: str, storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A saved storage block whose files have public URLs; the app is pointed at it."""
    name = f"storage-{uuid.uuid4().hex[:10]}"
    base = "https://cdn.example.test/ads-public"
    await AdStorage(
        filesystem=LocalFileSystem(basepath=str(storage_root)), public_base_url=base
    ).save(name)
    monkeypatch.setenv("AD_SCHEDULER_STORAGE_BLOCK", name)
    get_settings.cache_clear()
    return base


@pytest.fixture
def ui_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """A configured Prefect UI URL (links in exports)."""
    url = "https://prefect.example.test"
    monkeypatch.setenv("AD_SCHEDULER_PREFECT_UI_URL", url)
    get_settings.cache_clear()
    return url
