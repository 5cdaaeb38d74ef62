"""export_ad_run against the fake Resend API and Slack webhook, on both database backends."""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.models import AdRun, ExportDelivery, GeneratedAd
from db.session import session_scope
from flows.exports import export_stored_ad_run, export_stored_digest
from tests.exports.conftest import SavedBlocks, png_bytes, seed_runs, settings_for
from tests.support.http_fake import FakeResend, FakeSlackWebhook

pytestmark = pytest.mark.usefixtures("use_database")


async def deliveries(
    ad_run_id: object = None, job_run_id: object = None
) -> dict[str, ExportDelivery]:
    async with session_scope() as session:
        column = ExportDelivery.ad_run_id if ad_run_id else ExportDelivery.scheduled_job_run_id
        rows = (
            await session.scalars(
                sa.select(ExportDelivery).where(column == (ad_run_id or job_run_id))
            )
        ).all()
    return {row.channel: row for row in rows}


async def test_email_and_slack_payloads(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
    ui_url: str,
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=3)

    outcomes = await export_stored_ad_run(run.ad_run_id, settings_for(saved_blocks))

    assert [(o.channel, o.status) for o in outcomes] == [("email", "sent"), ("slack", "sent")]
    assert waits == []
    # -- the email --
    [post] = fake_resend.posts
    assert post.headers["idempotency-key"] == f"ad-scheduler/ad-run/{run.ad_run_id}/email"
    email = post.json
    assert email["from"] == "Ads <ads@example.test>"
    assert email["reply_to"] == "marketing@example.test"
    assert email["to"] == ["team@example.com", "lead@example.com"]
    for part in ("Acme Outdoors", "Trail Runner 2", "summer-sale.png", "2026-11-23"):
        assert part in email["subject"]
    attachments = email["attachments"]
    assert len(attachments) == 3
    for attachment, path in zip(attachments, run.ad_paths, strict=True):
        assert attachment["content_id"] and f'src="cid:{attachment["content_id"]}"' in email["html"]
        assert attachment["content_type"] == "image/png"
        assert base64.b64decode(attachment["content"]) == png_bytes(
            48, seed=run.ad_paths.index(path)
        )
        assert attachment["filename"] == f"summer-sale-{Path(path).name}"
    assert "Headline 1" in email["text"] and "summer-sale-variation-3.png" in email["text"]
    assert f"{ui_url}/runs/flow-run/{run.flow_run_id}" in email["html"]
    assert {t["name"]: t["value"] for t in email["tags"]} == {
        "job": str(run.job_id),
        "product": str(run.product_id),
        "ad_run": str(run.ad_run_id),
    }
    assert outcomes[0].provider_message_id
    # -- the Slack message --
    [message] = fake_slack.delivered
    assert "Trail Runner 2" in message["text"] and "3 ads" in message["text"]
    blocks = message["blocks"]
    assert blocks[0]["type"] == "header" and "Trail Runner 2" in blocks[0]["text"]["text"]
    context = " ".join(e["text"] for e in blocks[1]["elements"])
    for part in (
        "Acme Outdoors",
        "Trail Runner 2",
        "summer-sale.png",
        "weekly-trail",
        f"<{ui_url}/runs/flow-run/{run.flow_run_id}|",
    ):
        assert part in context
    # Local storage gives no public URL: the ads are named, not shown.
    assert not [b for b in blocks if b["type"] == "image"]
    assert "summer-sale-variation-1.png" in blocks[2]["text"]["text"]
    # -- the records --
    rows = await deliveries(ad_run_id=run.ad_run_id)
    assert rows["email"].status == "sent" and rows["email"].attempts == 1
    assert rows["email"].provider_message_id == outcomes[0].provider_message_id
    assert rows["slack"].status == "sent" and rows["slack"].sent_at is not None


async def test_rerun_sends_one_email_and_one_slack_post(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=2)
    export = settings_for(saved_blocks)

    first = await export_stored_ad_run(run.ad_run_id, export)
    second = await export_stored_ad_run(run.ad_run_id, export)

    assert [o.status for o in first] == ["sent", "sent"]
    assert [o.status for o in second] == ["already_sent", "already_sent"]
    assert second[0].provider_message_id == first[0].provider_message_id
    assert len(fake_resend.posts) == 1 and len(fake_resend.delivered) == 1
    assert len(fake_slack.posts) == 1

    # A manual re-send goes out again, with a fresh idempotency key, and stays recorded as sent.
    forced = await export_stored_ad_run(run.ad_run_id, export, force=True)
    assert [o.status for o in forced] == ["sent", "sent"]
    assert len(fake_resend.delivered) == 2 and len(fake_slack.delivered) == 2
    keys = [p.headers["idempotency-key"] for p in fake_resend.posts]
    assert keys[1] != keys[0] and keys[1].startswith(keys[0])
    rows = await deliveries(ad_run_id=run.ad_run_id)
    assert rows["email"].status == rows["slack"].status == "sent"
    assert rows["email"].attempts == 2


async def test_retry_after_lost_answer_reuses_the_idempotency_key(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    waits: list[float],
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=1)
    fake_resend.fail_next(500, "internal_server_error")

    [outcome] = await export_stored_ad_run(
        run.ad_run_id, settings_for(saved_blocks, destination="email")
    )

    assert outcome.status == "sent"
    assert len(waits) == 1
    keys = {p.headers["idempotency-key"] for p in fake_resend.posts}
    assert len(fake_resend.posts) == 2 and len(keys) == 1
    assert len(fake_resend.delivered) == 1


async def test_digest_mode_emails_once_per_job_run_and_posts_slack_per_ad_run(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
) -> None:
    runs = await seed_runs(
        db_url, tenant_id, storage_root, templates=("spring.png", "autumn.png"), ads=2
    )
    export = settings_for(saved_blocks, email_mode="digest")

    per_run = [await export_stored_ad_run(r.ad_run_id, export) for r in runs]
    digest = await export_stored_digest(runs[0].job_run_id, export)
    again = await export_stored_digest(runs[0].job_run_id, export)

    assert [[(o.channel, o.status) for o in out] for out in per_run] == [[("slack", "sent")]] * 2
    assert [(o.channel, o.status) for o in digest] == [("email", "sent")]
    assert [o.status for o in again] == ["already_sent"]
    [post] = fake_resend.posts
    assert post.headers["idempotency-key"] == f"ad-scheduler/job-run/{runs[0].job_run_id}/email"
    email = post.json
    assert "spring.png" in email["subject"] and "autumn.png" in email["subject"]
    assert len(email["attachments"]) == 4
    assert {t["name"] for t in email["tags"]} == {"job", "product", "job_run"}
    assert len(fake_slack.delivered) == 2
    rows = await deliveries(job_run_id=runs[0].job_run_id)
    assert rows["email"].status == "sent"


async def test_email_stays_under_the_size_limit(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    waits: list[float],
) -> None:
    from blocks.email_resend import ResendEmail
    from flows.exports.content import EMAIL_ENVELOPE_RESERVE

    # Incompressible 120x120 images are about 43 KB each, 58 KB in base64.
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=4, image_size=120, noisy=True)
    block: ResendEmail = await ResendEmail.aload(saved_blocks.email)
    block.max_message_bytes = EMAIL_ENVELOPE_RESERVE + 130_000
    await block.save(saved_blocks.email, overwrite=True)

    [outcome] = await export_stored_ad_run(
        run.ad_run_id, settings_for(saved_blocks, destination="email")
    )

    assert outcome.status == "sent"
    email = fake_resend.posts[0].json
    assert len(email["attachments"]) == 2
    assert len(fake_resend.posts[0].raw) < block.max_message_bytes
    for text in (email["text"], email["html"]):
        assert "2 more ads were left out" in text
        assert "summer-sale-variation-4.png" in text


async def test_slack_shows_images_and_splits_at_fifty_blocks(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_slack: FakeSlackWebhook,
    public_storage: str,
    waits: list[float],
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=60, image_size=8)

    [outcome] = await export_stored_ad_run(
        run.ad_run_id, settings_for(saved_blocks, destination="slack")
    )

    assert outcome.status == "sent" and outcome.provider_message_id == "slack-webhook:2-messages"
    assert len(fake_slack.delivered) == 2
    images = []
    for number, message in enumerate(fake_slack.delivered, start=1):
        assert len(message["blocks"]) <= 50
        assert message["text"].endswith(f"(part {number}/2)")
        images += [b for b in message["blocks"] if b["type"] == "image"]
    assert fake_slack.delivered[0]["blocks"][0]["type"] == "header"
    assert len(images) == 60
    assert images[0]["image_url"] == f"{public_storage}/{run.ad_paths[0]}"
    assert images[0]["alt_text"] == "Headline 1"


async def test_nothing_to_export_is_skipped(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=0)

    outcomes = await export_stored_ad_run(run.ad_run_id, settings_for(saved_blocks))
    off = await export_stored_ad_run(run.ad_run_id, settings_for(saved_blocks, destination="none"))

    assert [(o.channel, o.status) for o in outcomes] == [("email", "skipped"), ("slack", "skipped")]
    assert off == []
    assert fake_resend.posts == [] and fake_slack.posts == []


async def test_failed_export_keeps_the_ads_and_a_later_export_heals(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=3)
    export = settings_for(saved_blocks, destination="slack")
    fake_slack.fail_next(500, "rollup_error")
    fake_slack.fail_next(500, "rollup_error")
    fake_slack.fail_next(500, "rollup_error")
    fake_slack.fail_next(500, "rollup_error")
    fake_slack.fail_next(500, "rollup_error")

    [failed] = await export_stored_ad_run(run.ad_run_id, export)

    assert (failed.status, failed.error_kind) == ("failed", "retryable")
    assert len(waits) == 4
    async with session_scope() as session:
        ad_run = await session.get_one(AdRun, run.ad_run_id)
        ads = (
            await session.scalars(
                sa.select(GeneratedAd).where(GeneratedAd.ad_run_id == run.ad_run_id)
            )
        ).all()
    assert ad_run.status == "completed" and len(ads) == 3
    assert ad_run.error_message and ad_run.error_message.startswith("export to slack failed")
    assert (await deliveries(ad_run_id=run.ad_run_id))["slack"].status == "failed"

    [healed] = await export_stored_ad_run(run.ad_run_id, export)

    assert healed.status == "sent"
    row = (await deliveries(ad_run_id=run.ad_run_id))["slack"]
    assert (row.status, row.attempts, row.error_message) == ("sent", 2, None)
    async with session_scope() as session:
        assert (await session.get_one(AdRun, run.ad_run_id)).error_message is None
