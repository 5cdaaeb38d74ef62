"""Text that breaks its medium, end to end: a hostile product name and an ad Slack cannot show,
exported through the real flow code to the fake Resend API and Slack webhook."""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db.models import GeneratedAd, ScheduledJobRun
from db.session import session_scope
from domain import text as medium
from flows.exports import export_stored_ad_run
from tests.exports.conftest import RUN_DAY, SavedBlocks, png_bytes, settings_for
from tests.support.factories import make_ad_run, make_brand, make_job, make_product
from tests.support.http_fake import FakeResend, FakeSlackWebhook

pytestmark = pytest.mark.usefixtures("use_database")

HOSTILE = "Salt & Pepper <!channel>\r\nBcc: everyone@example.com"


def slack_problems(message: dict[str, Any]) -> list[str]:
    """What Slack would reject the message for (Block Kit limits) or ping with."""
    problems = []
    if len(message["text"]) > medium.SLACK_TEXT_MAX or "<!" in message["text"]:
        problems.append("text")
    for block in message["blocks"]:
        if block["type"] == "header" and len(block["text"]["text"]) > 150:
            problems.append("header")
        if block["type"] == "section" and len(block["text"]["text"]) > 3000:
            problems.append("section")
        if block["type"] == "context":
            if len(block["elements"]) > 10:
                problems.append("context elements")
            for element in block["elements"]:
                if len(element["text"]) > 3000 or "<!" in element["text"]:
                    problems.append("context text")
        if block["type"] == "image":
            if len(block["alt_text"]) > 2000:
                problems.append("alt_text")
            if not block["image_url"].endswith((".png", ".jpg", ".jpeg", ".gif")):
                problems.append("image type")
    return problems


async def test_hostile_names_and_a_webp_ad_reach_slack_and_email_safely(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
    public_storage: str,
    waits: list[float],
) -> None:
    async with session_scope(db_url) as session:
        brand = await make_brand(session, tenant_id, name="Acme <b>Outdoors</b>")
        product = await make_product(session, tenant_id, brand, name=HOSTILE + " " + "x" * 300)
        job = await make_job(session, tenant_id, product, name="weekly | trail")
        job_run = ScheduledJobRun(scheduled_job_id=job.id, tenant_id=tenant_id, status="running")
        session.add(job_run)
        await session.flush()
        ad_run = await make_ad_run(
            session, tenant_id, product, "summer.png", job_run=job_run, completed_at=RUN_DAY
        )
        for index, (suffix, kind) in enumerate([("png", "image/png"), ("webp", "image/webp")]):
            path = f"ads/{tenant_id}/{ad_run.id}/variation-{index + 1}.{suffix}"
            session.add(
                GeneratedAd(
                    tenant_id=tenant_id,
                    ad_run_id=ad_run.id,
                    variation_index=index,
                    storage_path=path,
                    headline=f"<!here> deal {index + 1}",
                    width=48,
                    height=48,
                    size_bytes=100,
                    content_type=kind,
                )
            )
            (storage_root / path).parent.mkdir(parents=True, exist_ok=True)
            (storage_root / path).write_bytes(png_bytes(48, seed=index))

    outcomes = await export_stored_ad_run(ad_run.id, settings_for(saved_blocks))

    assert [(o.channel, o.status) for o in outcomes] == [("email", "sent"), ("slack", "sent")]
    [message] = fake_slack.delivered
    assert slack_problems(message) == []
    assert message["text"].startswith(
        "New ads for Salt &amp; Pepper &lt;!channel&gt; Bcc: everyone@example.com xxx"
    )
    images = [b for b in message["blocks"] if b["type"] == "image"]
    # Only the PNG is an image block; the WebP would get the whole post rejected.
    assert [b["image_url"] for b in images] == [
        f"{public_storage}/ads/{tenant_id}/{ad_run.id}/variation-1.png"
    ]
    listed = " ".join(b["text"]["text"] for b in message["blocks"] if b["type"] == "section")
    assert "summer-variation-2.webp" in listed and "&lt;!here&gt; deal 2" in listed
    [email] = fake_resend.delivered
    assert "\r" not in email["subject"] and "\n" not in email["subject"]
    assert email["subject"].startswith(
        "New ads: Acme <b>Outdoors</b> · Salt & Pepper <!channel> Bcc:"
    )
    assert len(email["subject"]) <= medium.EMAIL_SUBJECT_MAX
    assert "Acme &lt;b&gt;Outdoors&lt;/b&gt;" in email["html"]
    assert "<b>Outdoors</b>" not in email["html"]
