"""The "N ads waiting for approval" message: Slack and/or email, once per waiting run.

It goes to the job's own export channels, says how many ads wait, shows small thumbnails
(Slack: image blocks when storage gives a public URL, else the headlines; email: inline JPEG
thumbnails) and links the run in the Prefect UI (`AD_SCHEDULER_PREFECT_UI_URL`), where the
resume form is. It is never the ads' export itself: no full-size files, no delivery rows.
A failure is logged and never stops the approval (the run still waits and can be decided).
"""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

from prefect import get_run_logger

from blocks.email_resend import ResendEmail
from blocks.registry import load_block
from blocks.slack_webhook import SlackIncomingWebhook
from blocks.storage import AdStorage
from db.models import ScheduledJob
from db.queries.approvals import AdForReview
from domain import text as medium
from domain.params import ExportSettings

MAX_SLACK_IMAGES = 10
MAX_EMAIL_THUMBNAILS = 12
THUMBNAIL_PX = 160


def _run_link(flow_run_id: uuid.UUID) -> str | None:
    from config import get_settings

    base = get_settings().prefect_ui_url.strip().rstrip("/")
    return f"{base}/runs/flow-run/{flow_run_id}" if base else None


def compose_slack_notice(
    job_name: str, flow_run_id: uuid.UUID, ads: list[AdForReview], storage: AdStorage
) -> dict[str, Any]:
    """The Slack message (Block Kit) announcing the waiting ads."""
    link = _run_link(flow_run_id)
    title = f"{len(ads)} ads waiting for approval: {job_name}"
    where = (
        f"<{link}|Open the run in Prefect> to approve or reject each ad."
        if link
        else f"Decide with `ad-scheduler approvals decide {flow_run_id}`."
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": medium.slack_plain(title, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": where}},
    ]
    listed: list[str] = []
    images = 0
    for ad in ads:
        url = storage.public_url(ad.storage_path)
        if images < MAX_SLACK_IMAGES and medium.slack_shows_image(ad.content_type, url):
            assert url is not None
            blocks.append(
                {
                    "type": "image",
                    "image_url": url,
                    "alt_text": medium.slack_plain(ad.headline or ad.template, 2000),
                    "title": {
                        "type": "plain_text",
                        "text": medium.slack_plain(f"{ad.template}: {ad.headline}", 2000),
                    },
                }
            )
            images += 1
        else:
            listed.append(
                f"• {medium.slack_escape(ad.template)}: {medium.slack_escape(ad.headline)}"
            )
    if listed:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": medium.clip_escaped("\n".join(listed), 3000)},
            }
        )
    return {"text": medium.slack_text_fallback(title), "blocks": blocks}


async def thumbnail_jpeg(storage: AdStorage, path: str) -> bytes:
    """A small JPEG of a stored ad (at most `THUMBNAIL_PX` on its longest side), for the review
    page (`flows.approval`) and the notice email alike.

    Raises:
        Whatever reading the ad or decoding it raises (the callers go on without the picture).
    """
    import asyncio

    from PIL import Image

    data = await storage.read(path)

    def shrink() -> bytes:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=70)
            return out.getvalue()

    return await asyncio.to_thread(shrink)


async def _thumbnail(storage: AdStorage, path: str) -> bytes | None:
    try:
        return await thumbnail_jpeg(storage, path)
    except Exception:  # a missing picture is listed by name instead
        return None


async def compose_email_notice(
    block: ResendEmail,
    *,
    recipients: list[str],
    job_name: str,
    flow_run_id: uuid.UUID,
    ads: list[AdForReview],
    storage: AdStorage,
) -> dict[str, Any]:
    """The Resend `POST /emails` body announcing the waiting ads (inline thumbnails)."""
    link = _run_link(flow_run_id)
    subject = medium.email_header(f"{len(ads)} ads waiting for approval: {job_name}")
    html = [f"<h2>{medium.html_text(subject)}</h2>"]
    text = [subject]
    if link:
        html.append(
            f'<p><a href="{medium.html_text(link)}">Open the run in Prefect</a> '
            "to approve or reject each ad.</p>"
        )
        text.append(f"Open the run in Prefect to decide: {link}")
    else:
        html.append(f"<p>Decide with <code>ad-scheduler approvals decide {flow_run_id}</code>.</p>")
        text.append(f"Decide with: ad-scheduler approvals decide {flow_run_id}")
    attachments = []
    for index, ad in enumerate(ads):
        label = medium.html_text(f"{ad.template}: {ad.headline}")
        small = await _thumbnail(storage, ad.storage_path) if index < MAX_EMAIL_THUMBNAILS else None
        if small is not None:
            cid = f"approval-{index}"
            attachments.append(
                {
                    "filename": f"thumbnail-{index + 1}.jpg",
                    "content": base64.b64encode(small).decode("ascii"),
                    "content_type": "image/jpeg",
                    "content_id": cid,
                }
            )
            html.append(
                f'<p><img src="cid:{cid}" width="{THUMBNAIL_PX}" alt="{label}"><br>{label}</p>'
            )
        else:
            html.append(f"<p>{label}</p>")
        text.append(f"- {ad.template}: {ad.headline}")
    params: dict[str, Any] = {
        "from": block.from_address,
        "to": list(recipients),
        "subject": subject,
        "html": "".join(html),
        "text": "\n".join(text),
        "attachments": attachments,
    }
    if block.reply_to:
        params["reply_to"] = block.reply_to
    return params


async def announce_waiting(
    job: ScheduledJob,
    export: ExportSettings,
    flow_run_id: uuid.UUID,
    ads: list[AdForReview],
    storage: AdStorage,
) -> list[str]:
    """Send the waiting message to the job's channels; returns the channels it reached.

    Never raises: a channel that fails is logged by its error type only (messages from
    providers can carry URLs with secrets).
    """
    logger = get_run_logger()
    reached: list[str] = []
    if export.wants_slack and export.slack_webhook_block:
        try:
            slack = await load_block(
                export.slack_webhook_block.rpartition("/")[2], SlackIncomingWebhook
            )
            await slack.get_client().post(compose_slack_notice(job.name, flow_run_id, ads, storage))
            reached.append("slack")
        except Exception as exc:
            logger.warning("approval notice to Slack failed (%s)", type(exc).__name__)
    if export.wants_email and export.email_block:
        try:
            email = await load_block(export.email_block.rpartition("/")[2], ResendEmail)
            params = await compose_email_notice(
                email,
                recipients=list(export.email_recipients),
                job_name=job.name,
                flow_run_id=flow_run_id,
                ads=ads,
                storage=storage,
            )
            await email.get_client().send(params, idempotency_key=f"approval-{flow_run_id}")
            reached.append("email")
        except Exception as exc:
            logger.warning("approval notice by email failed (%s)", type(exc).__name__)
    return reached
