"""Export tasks: generated ads by email (Resend) and to Slack (incoming webhook).

What holds, whatever the providers do:

- **Never sent twice.** Every export is a delivery row per (ad run or job run, channel), claimed
  before sending (`db.queries.deliveries`). A row already `sent` is reported `already_sent` and
  nothing goes out, unless the caller forces a manual re-send. Emails also carry a Resend
  idempotency key derived from the run and the channel, so a retry after a lost answer is
  answered with the original email instead of a second one.
- **Recorded through a brief database outage.** The claim and the outcome are short writes
  retried by the one database retry policy (`db.session.retry_transaction`, connection errors
  only). A send whose outcome still cannot be recorded is returned `unconfirmed` ("sent, not
  recorded — check") and its row stays claimed; whoever next looks at it (`retry-exports`, a
  later export) never re-posts it to Slack — it is set `unconfirmed` for a person to check —
  while an email is safely re-sent under the same idempotency key (Resend answers with the
  original email), which records it `sent`.
- **Retried later.** A delivery that failed for a retryable reason is sent again by the
  `retry-exports` flow (`flows/retry_exports.py`, deployed every 10 minutes from prefect.yaml).
- **Never raises for provider or network errors.** Failures are recorded on the delivery (and in
  the ad run's `error_message`) as `permanent` or `retryable`, and returned as outcomes. The
  generated ads and their usage are never touched.
- **Retried honestly.** Retryable errors (Resend 429 `rate_limit_exceeded`, 5xx, connection
  failures; Slack 429 and 5xx) are retried with tenacity, waiting what the provider asked for in
  `Retry-After`, else backing off exponentially. A provider asking for more than
  `RETRY.max_retry_after` seconds is not waited for: the delivery is failed as retryable.
- **Throttled across workers.** Every request first takes a slot of a Prefect global rate limit
  (`rate_limit(..., strict=True)`), one per email block (its `requests_per_second`, Resend allows
  2/s by default) and one per Slack webhook block (1 message/s). `ensure_export_limits` creates
  them; a task that finds its limit missing creates it too.
- **No secrets** in parameters (block names only), logs, errors or artifacts.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Literal, TypeVar
from uuid import UUID

import sqlalchemy as sa
from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, rate_limit
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from blocks.email_resend import RESEND_MAX_RECIPIENTS, EmailDeliveryError, ResendEmail
from blocks.errors import DeliveryError, ErrorKind
from blocks.registry import load_block
from blocks.slack_webhook import SlackDeliveryError, SlackIncomingWebhook
from blocks.storage import AdStorage, load_storage
from config import get_settings
from db.models import AdRun, AdTemplate, Brand, GeneratedAd, Product, ScheduledJob, ScheduledJobRun
from db.queries.deliveries import (
    IN_FLIGHT_LEASE,
    UNCONFIRMED_LABEL,
    Channel,
    DeliveryClaim,
    claim_delivery,
    mark_failed,
    mark_sent,
)
from db.session import is_connection_error, retry_transaction, session_scope
from domain import text as medium
from domain.params import ExportSettings

DeliveryStatus = Literal["sent", "failed", "already_sent", "skipped", "unconfirmed"]
T = TypeVar("T")

#: Slack's limits (https://docs.slack.dev/reference/block-kit/blocks).
SLACK_MAX_BLOCKS = 50
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_IMAGE_URL_MAX = 3000
#: Room kept in an email for the JSON envelope, HTML, text and the note about left-out images.
EMAIL_ENVELOPE_RESERVE = 256 * 1024
#: Per-attachment JSON overhead (keys, filename, content id).
ATTACHMENT_OVERHEAD = 512

LIMIT_PREFIX = "ad-scheduler"
#: What a retryable failure's note promises; `flows/retry_exports.py` keeps the promise.
RETRY_EXPORTS_EVERY_MINUTES = 10
RETRY_EXPORTS_MAX_ATTEMPTS = 6
RETRIED_LATER = (
    f"the retry-exports flow tries again (every {RETRY_EXPORTS_EVERY_MINUTES} min, "
    f"up to {RETRY_EXPORTS_MAX_ATTEMPTS} attempts within 23 h)"
)


class DeliveryOutcome(BaseModel):
    """What happened to one export of one run to one channel.

    Attributes:
        channel: `email` or `slack`.
        status: `sent`, `failed`, `already_sent` (an earlier run sent it; nothing went out),
            `skipped` (nothing to send) or `unconfirmed` (sent, not recorded — check: it may
            have gone out but that could not be recorded; never re-sent automatically).
        provider_message_id: Resend's email id; for Slack, how many messages were posted.
        error: Why it failed or was skipped (never contains a secret).
        error_kind: `permanent` (needs a person: reconfigure, fix data) or `retryable`.
    """

    channel: Channel
    status: DeliveryStatus
    provider_message_id: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None


@dataclass
class RetrySettings:
    """How provider calls are retried; tests swap in a recording `sleep`.

    Attributes:
        attempts: Attempts per request, the first included.
        backoff: Wait strategy when the provider gave no `Retry-After`.
        max_retry_after: Longest provider-requested wait honoured, in seconds.
        throttle_timeout: Longest wait for a rate-limit slot, in seconds.
        sleep: Awaited with the seconds to wait between attempts.
    """

    attempts: int = 5
    backoff: wait_base = field(
        default_factory=lambda: wait_exponential_jitter(initial=1, max=30, jitter=1)
    )
    max_retry_after: float = 120.0
    throttle_timeout: float = 600.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


#: The module's retry settings (replace the object to change them, e.g. in tests).
RETRY = RetrySettings()


class ExportError(Exception):
    """An export that cannot be made as configured (missing block, unreadable storage, …)."""

    def __init__(self, message: str, kind: ErrorKind = "permanent") -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind


ProviderError = DeliveryError


# --------------------------------------------------------------------------------------------
# Global rate limits


def resend_limit_name(block_name: str) -> str:
    """Name of the global rate limit of a Resend email block (`name` or `slug/name`)."""
    return f"{LIMIT_PREFIX}-resend-{block_name.rpartition('/')[2]}"


def slack_limit_name(block_name: str) -> str:
    """Name of the global rate limit of a Slack webhook block (`name` or `slug/name`)."""
    return f"{LIMIT_PREFIX}-slack-{block_name.rpartition('/')[2]}"


async def _ensure_limit(name: str, per_second: float) -> None:
    limit = max(1, math.ceil(per_second))
    async with get_client() as client:
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name, limit=limit, slot_decay_per_second=per_second
                    )
                )
            except ObjectAlreadyExists:
                pass
            return
        if existing.limit != limit or existing.slot_decay_per_second != per_second:
            await client.update_global_concurrency_limit(
                name,
                GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=per_second),
            )


async def ensure_export_limits(export: ExportSettings) -> None:
    """Create (or correct) the global rate limits the configured exports need; idempotent.

    One limit per email block (its `requests_per_second`) and one per Slack webhook block (its
    `messages_per_second`). A block that cannot be loaded is skipped here: the export task
    records that failure on its delivery.

    Args:
        export: The job's export settings.
    """
    if export.wants_email and export.email_block:
        try:
            email = await _load_block(ResendEmail, export.email_block, "Resend email")
        except ExportError:
            pass
        else:
            await _ensure_limit(resend_limit_name(export.email_block), email.requests_per_second)
    if export.wants_slack and export.slack_webhook_block:
        try:
            webhook = await _load_block(
                SlackIncomingWebhook, export.slack_webhook_block, "Slack webhook"
            )
        except ExportError:
            pass
        else:
            await _ensure_limit(
                slack_limit_name(export.slack_webhook_block), webhook.messages_per_second
            )


async def _take_slot(name: str, per_second: float) -> None:
    try:
        await rate_limit(name, strict=True, timeout_seconds=RETRY.throttle_timeout)
    except ConcurrencySlotAcquisitionError:
        # The flow did not call ensure_export_limits (or someone deleted the limit).
        await _ensure_limit(name, per_second)
        await rate_limit(name, strict=True, timeout_seconds=RETRY.throttle_timeout)


# --------------------------------------------------------------------------------------------
# Retries


class _ProviderWait(wait_base):
    """Wait what the provider asked for (`Retry-After`), else back off."""

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float):
            return max(0.0, float(retry_after))
        return float(RETRY.backoff(retry_state))


def _retryable(error: BaseException) -> bool:
    if not isinstance(error, EmailDeliveryError | SlackDeliveryError) or not error.retryable:
        return False
    return error.retry_after is None or error.retry_after <= RETRY.max_retry_after


async def _sleep(seconds: float) -> None:
    await RETRY.sleep(seconds)


async def _call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    limit_name: str,
    per_second: float,
    what: str,
    logger: Any,
) -> T:
    """Run `call` inside a rate-limit slot per attempt, retrying retryable provider errors."""

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "%s: attempt %d/%d failed (%s); retrying in %.1fs",
            what,
            state.attempt_number,
            RETRY.attempts,
            getattr(error, "message", type(error).__name__),
            wait,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(RETRY.attempts),
        wait=_ProviderWait(),
        retry=retry_if_exception(_retryable),
        sleep=_sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await _take_slot(limit_name, per_second)
            return await call()
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


def _provider_failure(error: ProviderError) -> tuple[str, ErrorKind]:
    message = error.message
    if error.retryable and error.retry_after is not None:
        if error.retry_after > RETRY.max_retry_after:
            message += f"; asked to wait {error.retry_after:.0f}s, longer than we wait"
    if error.retryable:
        message += f"; {RETRIED_LATER}"
    return message, error.kind


# --------------------------------------------------------------------------------------------
# What is exported


@dataclass
class AdRunContent:
    """One ad run with everything an email or Slack message says about it."""

    ad_run: AdRun
    ads: list[GeneratedAd]
    product: Product
    brand: Brand
    template_label: str
    job_id: UUID | None
    job_name: str
    flow_run_id: UUID | None

    @property
    def when(self) -> datetime:
        """The run's date for subjects: completion, else creation."""
        return self.ad_run.completed_at or self.ad_run.created_at

    def file_name(self, ad: GeneratedAd) -> str:
        """A file name that says which template an ad came from."""
        stem = PurePosixPath(self.ad_run.template_storage_name).stem
        return f"{stem}-{PurePosixPath(ad.storage_path).name}"


async def _load_ad_runs(where: sa.ColumnElement[bool]) -> list[AdRunContent]:
    async with session_scope() as session:
        runs = list(
            (await session.scalars(sa.select(AdRun).where(where).order_by(AdRun.created_at))).all()
        )
        contents: list[AdRunContent] = []
        for run in runs:
            ads = list(
                (
                    await session.scalars(
                        sa.select(GeneratedAd)
                        .where(GeneratedAd.ad_run_id == run.id)
                        .order_by(GeneratedAd.variation_index)
                    )
                ).all()
            )
            product = await session.get_one(Product, run.product_id)
            brand = await session.get_one(Brand, product.brand_id)
            template_name = await session.scalar(
                sa.select(AdTemplate.name).where(
                    AdTemplate.tenant_id == run.tenant_id,
                    AdTemplate.storage_name == run.template_storage_name,
                )
            )
            job_name = "manual run"
            if run.scheduled_job_id is not None:
                job_name = (
                    await session.scalar(
                        sa.select(ScheduledJob.name).where(ScheduledJob.id == run.scheduled_job_id)
                    )
                ) or job_name
            flow_run_id = run.flow_run_id
            if flow_run_id is None and run.scheduled_job_run_id is not None:
                flow_run_id = await session.scalar(
                    sa.select(ScheduledJobRun.flow_run_id).where(
                        ScheduledJobRun.id == run.scheduled_job_run_id
                    )
                )
            contents.append(
                AdRunContent(
                    ad_run=run,
                    ads=ads,
                    product=product,
                    brand=brand,
                    template_label=template_name or run.template_storage_name,
                    job_id=run.scheduled_job_id,
                    job_name=job_name,
                    flow_run_id=flow_run_id,
                )
            )
        return contents


def flow_run_url(flow_run_id: UUID | None) -> str | None:
    """Link to a flow run in the Prefect UI, when `AD_SCHEDULER_PREFECT_UI_URL` is set."""
    base = get_settings().prefect_ui_url.strip().rstrip("/")
    if not base or flow_run_id is None:
        return None
    return f"{base}/runs/flow-run/{flow_run_id}"


def _tag_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:256] or "none"


def _b64_len(size: int) -> int:
    return 4 * math.ceil(size / 3)


# --------------------------------------------------------------------------------------------
# Email


@dataclass
class _InlineImage:
    content: AdRunContent
    ad: GeneratedAd
    cid: str
    data_b64: str


async def compose_email(
    contents: list[AdRunContent],
    *,
    storage: AdStorage,
    block: ResendEmail,
    recipients: list[str],
    digest_job_run_id: UUID | None = None,
) -> dict[str, Any]:
    """Build the `POST /emails` body: inline images (`cid:`), an HTML and a text part.

    Images are included in order while the email stays under the block's `max_message_bytes`
    (Resend: 40 MB after base64); the rest are named in a sentence saying they were left out.

    Args:
        contents: One ad run (per-ad-run email) or all ad runs of a job run (digest).
        storage: Where the ad images are read from.
        block: The email block (sender, reply-to, size limit).
        recipients: At most 50 addresses.
        digest_job_run_id: The job run, for a digest.

    Raises:
        ExportError: No recipients, or more than Resend accepts.
    """
    if not recipients:
        raise ExportError("email export has no recipients")
    if len(recipients) > RESEND_MAX_RECIPIENTS:
        raise ExportError(f"Resend accepts at most {RESEND_MAX_RECIPIENTS} recipients")
    first = contents[0]
    brand, product = first.brand.name, first.product.name
    day = first.when.date().isoformat()
    templates = [c.template_label for c in contents]
    if digest_job_run_id is None:
        subject = f"New ads: {brand} · {product} · {templates[0]} · {day}"
    else:
        shown = ", ".join(templates[:3]) + (
            f" +{len(templates) - 3} more" if len(templates) > 3 else ""
        )
        subject = f"New ads: {brand} · {product} · {shown} · {day}"
    # A header is one line: CR/LF in a name must not start another header.
    subject = medium.email_header(subject)

    budget = block.max_message_bytes - EMAIL_ENVELOPE_RESERVE
    used = 0
    included: list[_InlineImage] = []
    left_out: list[tuple[AdRunContent, GeneratedAd, str]] = []
    for content in contents:
        for ad in content.ads:
            try:
                data = await storage.read(ad.storage_path)
            except (OSError, ValueError):
                left_out.append((content, ad, "could not be read from storage"))
                continue
            cost = _b64_len(len(data)) + ATTACHMENT_OVERHEAD
            if used + cost > budget:
                left_out.append((content, ad, "too large"))
                continue
            used += cost
            included.append(
                _InlineImage(content, ad, f"ad-{ad.id.hex}", base64.b64encode(data).decode("ascii"))
            )

    esc = medium.html_text
    parts_html: list[str] = [
        '<!doctype html><html><body style="font-family:Arial,Helvetica,sans-serif;color:#111">',
        f'<h1 style="font-size:20px">New ads for {esc(product)}</h1>',
    ]
    parts_text: list[str] = [f"New ads for {product}", ""]
    for content in contents:
        link = flow_run_url(content.flow_run_id)
        meta = (
            f"Brand: {content.brand.name} · Product: {content.product.name} · "
            f"Template: {content.template_label} · Job: {content.job_name} · "
            f"{content.when.date().isoformat()}"
        )
        parts_html.append(f'<h2 style="font-size:16px">{esc(content.template_label)}</h2>')
        parts_html.append(f'<p style="color:#555">{esc(meta)}</p>')
        parts_text += [f"Template: {content.template_label}", meta]
        if link:
            parts_html.append(f'<p><a href="{esc(link)}">Open the run in Prefect</a></p>')
            parts_text.append(f"Run in Prefect: {link}")
        for image in (i for i in included if i.content is content):
            label = image.ad.headline or content.file_name(image.ad)
            parts_html.append(
                f'<div style="margin:12px 0"><img src="cid:{image.cid}" '
                f'alt="{esc(label)}"'
                f' width="480" style="max-width:100%;height:auto;border:1px solid #ddd">'
                f'<p>{esc(label)} <span style="color:#777">({esc(content.file_name(image.ad))})'
                "</span></p></div>"
            )
            parts_text.append(f"- {label} ({content.file_name(image.ad)}, attached)")
        parts_text.append("")
    if left_out:
        names = ", ".join(c.file_name(ad) for c, ad, _why in left_out)
        too_large = sum(1 for *_x, why in left_out if why == "too large")
        unreadable = len(left_out) - too_large
        reasons = []
        if too_large:
            reasons.append(f"{too_large} to keep this email under Resend's size limit")
        if unreadable:
            reasons.append(f"{unreadable} because the image could not be read")
        sentence = (
            f"{len(left_out)} more ad{'s' if len(left_out) != 1 else ''} "
            f"{'were' if len(left_out) != 1 else 'was'} left out of this email "
            f"({'; '.join(reasons)}): {names}. Find them in the ad storage or in the Prefect run."
        )
        parts_html.append(f'<p style="color:#a16207">{esc(sentence)}</p>')
        parts_text.append(sentence)
    parts_html.append(
        '<p style="color:#777;font-size:12px">Sent by ad-scheduler.</p></body></html>'
    )

    subject_tag = (
        [{"name": "job_run", "value": _tag_value(str(digest_job_run_id))}]
        if digest_job_run_id is not None
        else [{"name": "ad_run", "value": _tag_value(str(first.ad_run.id))}]
    )
    params: dict[str, Any] = {
        "from": block.from_address,
        "to": list(recipients),
        "subject": subject,
        "html": "".join(parts_html),
        "text": "\n".join(parts_text),
        "tags": [
            {"name": "job", "value": _tag_value(str(first.job_id) if first.job_id else "manual")},
            {"name": "product", "value": _tag_value(str(first.product.id))},
            *subject_tag,
        ],
        "attachments": [
            {
                # A MIME header parameter: one line, like the subject.
                "filename": medium.email_header(image.content.file_name(image.ad)),
                "content": image.data_b64,
                "content_type": image.ad.content_type,
                "content_id": image.cid,
            }
            for image in included
        ],
    }
    if block.reply_to:
        params["reply_to"] = block.reply_to
    return params


def email_idempotency_key(
    claim: DeliveryClaim, *, ad_run_id: UUID | None = None, job_run_id: UUID | None = None
) -> str:
    """Resend idempotency key: the run and channel; a forced re-send gets a fresh one."""
    subject = f"ad-run/{ad_run_id}" if ad_run_id is not None else f"job-run/{job_run_id}"
    key = f"ad-scheduler/{subject}/email"
    return f"{key}/resend-{claim.attempt}" if claim.forced else key


async def _send_email(
    contents: list[AdRunContent],
    export: ExportSettings,
    claim: DeliveryClaim,
    *,
    ad_run_id: UUID | None,
    job_run_id: UUID | None,
    logger: Any,
    secrets: list[str],
) -> str:
    assert export.email_block is not None  # ExportSettings validates this for email exports
    block = await _load_block(ResendEmail, export.email_block, "Resend email")
    secrets.append(block.api_key.get_secret_value())
    storage = await _load_storage()
    params = await compose_email(
        contents,
        storage=storage,
        block=block,
        recipients=[str(r) for r in export.email_recipients],
        digest_job_run_id=job_run_id,
    )
    client = block.get_client()
    key = email_idempotency_key(claim, ad_run_id=ad_run_id, job_run_id=job_run_id)
    subject = f"ad run {ad_run_id}" if ad_run_id else f"job run {job_run_id}"
    sent = await _call_with_retries(
        lambda: client.send(params, idempotency_key=key),
        limit_name=resend_limit_name(export.email_block),
        per_second=block.requests_per_second,
        what=f"email of {subject}",
        logger=logger,
    )
    logger.info(
        "Emailed %d ad(s) to %d recipient(s) (Resend id %s, %d inline image(s))",
        sum(len(c.ads) for c in contents),
        len(params["to"]),
        sent.id,
        len(params["attachments"]),
    )
    return sent.id


# --------------------------------------------------------------------------------------------
# Slack


def _mrkdwn(text: str) -> str:
    return medium.slack_escape(text)


def _clip(text: str, limit: int) -> str:
    return medium.clip(text, limit)


def compose_slack_messages(content: AdRunContent, *, storage: AdStorage) -> list[dict[str, Any]]:
    """Block Kit messages for one ad run, split so that none has more than 50 blocks.

    The first message has a header and a context line (brand, product, template, job, and a link
    to the flow run when the Prefect UI URL is configured); each ad is an image block when the
    storage gives a URL Slack can fetch, otherwise the ads are listed by file name. Every
    message has a `text` fallback.
    """
    product, brand = content.product.name, content.brand.name
    context_elements: list[dict[str, Any]] = [
        {"type": "mrkdwn", "text": f"*Brand:* {_context_text(brand)}"},
        {"type": "mrkdwn", "text": f"*Product:* {_context_text(product)}"},
        {"type": "mrkdwn", "text": f"*Template:* {_context_text(content.template_label)}"},
        {"type": "mrkdwn", "text": f"*Job:* {_context_text(content.job_name)}"},
    ]
    link = flow_run_url(content.flow_run_id)
    if link:
        context_elements.append({"type": "mrkdwn", "text": f"<{link}|Open the run in Prefect>"})
    head: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": medium.slack_plain(
                    f"New ads: {product} · {content.template_label}", SLACK_HEADER_MAX
                ),
                "emoji": True,
            },
        },
        {"type": "context", "elements": context_elements},
    ]
    body: list[dict[str, Any]] = []
    unlinked: list[str] = []
    for index, ad in enumerate(content.ads, start=1):
        name = content.file_name(ad)
        label = ad.headline or name
        url = storage.public_url(ad.storage_path)
        # Only types Slack renders go in an image block: one WebP would get the post rejected.
        if medium.slack_shows_image(ad.content_type, url):
            body.append(
                {
                    "type": "image",
                    "image_url": url,
                    "alt_text": medium.slack_plain(label, medium.SLACK_IMAGE_ALT_TEXT_MAX),
                    "title": {
                        "type": "plain_text",
                        "text": medium.slack_plain(
                            f"{index}. {label}", medium.SLACK_IMAGE_TITLE_MAX
                        ),
                    },
                }
            )
        else:
            line = f"• `{_mrkdwn(medium.single_line(name))}`" + (
                f" — {_mrkdwn(medium.single_line(ad.headline))}" if ad.headline else ""
            )
            if url:
                line += f" (<{url}|open>)" if len(url) <= SLACK_IMAGE_URL_MAX else ""
            unlinked.append(line)
    if unlinked:
        intro = "Ad files (not shown as images: no public link, or a format Slack does not show):"
        section_lines: list[str] = [intro]
        for line in unlinked:
            if len("\n".join([*section_lines, line])) > SLACK_SECTION_MAX:
                body.append(_section("\n".join(section_lines)))
                section_lines = []
            section_lines.append(medium.clip_escaped(line, SLACK_SECTION_MAX))
        body.append(_section("\n".join(section_lines)))

    # The top-level text is mrkdwn too (and shown in notifications): escaped, so a name like
    # "<!channel>" cannot ping anyone; the link is added after escaping.
    fallback = medium.slack_text_fallback(
        f"New ads for {product} ({brand}) from template {content.template_label}: "
        f"{len(content.ads)} ad{'s' if len(content.ads) != 1 else ''}"
    ) + (f" · {link}" if link else "")
    chunks: list[list[dict[str, Any]]] = []
    first_room = SLACK_MAX_BLOCKS - len(head)
    chunks.append([*head, *body[:first_room]])
    rest = body[first_room:]
    while rest:
        room = SLACK_MAX_BLOCKS - 1  # one context block says which part this is
        chunks.append(rest[:room])
        rest = rest[room:]
    total = len(chunks)
    messages: list[dict[str, Any]] = []
    for number, chunk in enumerate(chunks, start=1):
        blocks = chunk
        if number > 1:
            continued = (
                medium.slack_mrkdwn(
                    f"{product} · {content.template_label}", medium.SLACK_CONTEXT_TEXT_MAX - 20
                )
                + f" (part {number}/{total})"
            )
            blocks = [
                {"type": "context", "elements": [{"type": "mrkdwn", "text": continued}]},
                *blocks,
            ]
        text = fallback if total == 1 else f"{fallback} (part {number}/{total})"
        messages.append({"text": text, "blocks": blocks})
    return messages


def _section(text: str) -> dict[str, Any]:
    bounded = medium.clip_escaped(text, SLACK_SECTION_MAX)
    return {"type": "section", "text": {"type": "mrkdwn", "text": bounded}}


def _context_text(text: str) -> str:
    """A name in a context element: escaped, bounded (with room for its `*Label:* `)."""
    return medium.slack_mrkdwn(medium.single_line(text), medium.SLACK_CONTEXT_TEXT_MAX - 20)


async def _send_slack(
    content: AdRunContent,
    export: ExportSettings,
    *,
    logger: Any,
    secrets: list[str],
) -> str:
    assert export.slack_webhook_block is not None  # ExportSettings validates this
    block = await _load_block(SlackIncomingWebhook, export.slack_webhook_block, "Slack webhook")
    secrets.append(block.url.get_secret_value())
    storage = await _load_storage()
    messages = compose_slack_messages(content, storage=storage)
    client = block.get_client()
    for number, message in enumerate(messages, start=1):
        try:
            await _call_with_retries(
                lambda message=message: client.post(message),  # type: ignore[misc]
                limit_name=slack_limit_name(export.slack_webhook_block),
                per_second=block.messages_per_second,
                what=f"Slack post {number}/{len(messages)} of ad run {content.ad_run.id}",
                logger=logger,
            )
        except SlackDeliveryError as exc:
            if number > 1:
                # Slack has no idempotency key: retrying would post the first parts again.
                exc.message += (
                    f" (after {number - 1} of {len(messages)} messages were posted; not retried "
                    "automatically, which would post those again: check Slack, then re-send "
                    "with `ad-scheduler export --force`)"
                )
                exc.kind = "permanent"
            raise
    logger.info(
        "Posted ad run %s to Slack (%d ad(s), %d message(s))",
        content.ad_run.id,
        len(content.ads),
        len(messages),
    )
    return f"slack-webhook:{len(messages)}-message{'s' if len(messages) != 1 else ''}"


# --------------------------------------------------------------------------------------------
# Shared plumbing

B = TypeVar("B", ResendEmail, SlackIncomingWebhook)


def block_document_name(kind: type[Block], reference: str) -> str:
    """The document name in a block reference: `name` or `<block-type-slug>/name`.

    Raises:
        ExportError: The reference names a block of another type.
    """
    slug, _, name = reference.rpartition("/")
    if slug and slug != kind.get_block_type_slug():
        raise ExportError(
            f"block {reference!r} is a {slug!r} block, not a {kind.get_block_type_slug()!r} block"
        )
    return name


async def _load_block(kind: type[B], reference: str, label: str) -> B:
    name = block_document_name(kind, reference)
    try:
        return await load_block(name, kind)
    except (ValueError, LookupError):
        raise ExportError(
            f"no {label} block named {name!r} is saved on the Prefect server"
        ) from None


async def _load_storage() -> AdStorage:
    try:
        return await load_storage()
    except (ValueError, LookupError) as exc:
        raise ExportError(f"the ad storage block cannot be loaded ({type(exc).__name__})") from None


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def _note_on_ad_run(ad_run_id: UUID, channel: Channel, error: str | None) -> None:
    """Keep the ad run's `error_message` in step with its export failures (never its ads)."""
    prefix = f"export to {channel} failed: "

    async def note(session: AsyncSession) -> None:
        run = await session.get(AdRun, ad_run_id, with_for_update=True)
        if run is None:
            return
        current = run.error_message
        if error is not None and (current is None or current.startswith("export to ")):
            run.error_message = (prefix + error)[:2000]
        elif error is None and current is not None and current.startswith(prefix):
            run.error_message = None

    try:
        await retry_transaction(note, what="ad run export note")
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # The delivery row is what counts; the ad run's note is a convenience.
        get_run_logger().warning(
            "could not note the %s export on ad run %s: database unreachable", channel, ad_run_id
        )


async def _deliver(
    *,
    channel: Channel,
    tenant_id: UUID,
    ad_run_id: UUID | None,
    job_run_id: UUID | None,
    force: bool,
    send: Callable[[DeliveryClaim, list[str]], Awaitable[str]],
    logger: Any,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> DeliveryOutcome:
    subject = f"ad run {ad_run_id}" if ad_run_id is not None else f"job run {job_run_id}"
    try:
        claim = await retry_transaction(
            lambda session: claim_delivery(
                session,
                tenant_id=tenant_id,
                channel=channel,
                ad_run_id=ad_run_id,
                job_run_id=job_run_id,
                force=force,
                in_flight_lease=in_flight_lease,
            ),
            what=f"{channel} delivery claim",
        )
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        logger.error("%s of %s not sent: the database is unreachable", channel, subject)
        return DeliveryOutcome(
            channel=channel,
            status="failed",
            error="not sent: the database was unreachable, so the send could not be claimed",
            error_kind="retryable",
        )
    if claim.unconfirmed:
        logger.warning("%s of %s: %s", channel, subject, claim.note or UNCONFIRMED_LABEL)
        return DeliveryOutcome(
            channel=channel, status="unconfirmed", error=claim.note or UNCONFIRMED_LABEL
        )
    if claim.already_sent:
        logger.info(
            "%s of %s was already sent (%s); not sending again",
            channel,
            subject,
            claim.provider_message_id,
        )
        return DeliveryOutcome(
            channel=channel, status="already_sent", provider_message_id=claim.provider_message_id
        )
    if claim.in_flight:
        logger.warning(
            "%s of %s is being sent by another run; not sending it too", channel, subject
        )
        return DeliveryOutcome(
            channel=channel,
            status="skipped",
            error=f"another export of this {subject.rsplit(' ', 1)[0]} is in progress",
        )
    if claim.forced:
        logger.warning("Manual re-send: %s of %s goes out again (forced)", channel, subject)

    secrets: list[str] = []
    error: str
    kind: ErrorKind
    try:
        provider_id = await send(claim, secrets)
    except (EmailDeliveryError, SlackDeliveryError) as exc:
        error, kind = _provider_failure(exc)
    except ExportError as exc:
        error, kind = exc.message, exc.kind
    except Exception as exc:
        # Anything else (the Prefect API for the rate limit, a bug) must not lose the run either.
        error = f"unexpected {type(exc).__name__} while exporting: {_scrub(str(exc), secrets)}"
        kind = "retryable"
    else:
        return await _record_sent(
            channel, subject, claim, provider_id, ad_run_id=ad_run_id, logger=logger
        )

    error = _scrub(error, secrets)[:1000]  # scrub first: truncation could cut a secret in half
    logger.error("%s of %s failed (%s): %s", channel, subject, kind, error)
    try:
        await retry_transaction(
            lambda session: mark_failed(
                session, claim.delivery_id, error_message=error, error_kind=kind
            ),
            what=f"{channel} delivery failure",
        )
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # Nothing went out; the row stays claimed, and the claim's lease says what happens next.
        logger.error(
            "could not record the failure of %s of %s: database unreachable", channel, subject
        )
    if ad_run_id is not None:
        await _note_on_ad_run(ad_run_id, channel, error)
    return DeliveryOutcome(channel=channel, status="failed", error=error, error_kind=kind)


async def _record_sent(
    channel: Channel,
    subject: str,
    claim: DeliveryClaim,
    provider_id: str,
    *,
    ad_run_id: UUID | None,
    logger: Any,
) -> DeliveryOutcome:
    """Record a send the provider accepted; through a brief outage, else say it is unrecorded."""
    try:
        await retry_transaction(
            lambda session: mark_sent(session, claim.delivery_id, provider_message_id=provider_id),
            what=f"{channel} delivery sent",
        )
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # The row stays claimed (pending). Nobody re-posts it to Slack: once its lease is over,
        # the next look (retry-exports, an export) sets it `unconfirmed` for a person to check.
        # An email goes again under the same idempotency key, which Resend answers with this
        # very email — so that retry records it `sent` without a second email.
        then = (
            "it will not be posted again automatically"
            if channel == "slack"
            else "a retry re-sends it under the same Resend idempotency key, which returns this "
            "email instead of sending another"
        )
        note = (
            f"{UNCONFIRMED_LABEL}: {channel} accepted it ({provider_id}) but the database was "
            f"unreachable, so it is not recorded; {then}"
        )
        logger.error("%s of %s: %s", channel, subject, note)
        return DeliveryOutcome(
            channel=channel, status="unconfirmed", provider_message_id=provider_id, error=note
        )
    if ad_run_id is not None:
        await _note_on_ad_run(ad_run_id, channel, None)
    return DeliveryOutcome(channel=channel, status="sent", provider_message_id=provider_id)


async def _publish(outcomes: list[DeliveryOutcome], subject: str) -> None:
    if not outcomes:
        return
    try:
        await acreate_table_artifact(
            table=[o.model_dump(mode="json") | {"run": subject} for o in outcomes],
            description=f"Export deliveries of {subject}",
        )
    except Exception:  # an artifact is a nicety; never fail an export over it
        get_run_logger().debug("could not create the export artifact", exc_info=True)


def _skipped(channels: list[Channel], reason: str) -> list[DeliveryOutcome]:
    return [DeliveryOutcome(channel=c, status="skipped", error=reason) for c in channels]


# --------------------------------------------------------------------------------------------
# Tasks


@task(name="export-ad-run", cache_policy=NO_CACHE)
async def export_ad_run(
    ad_run_id: UUID,
    export: ExportSettings,
    *,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> list[DeliveryOutcome]:
    """Export one ad run: its email (in `per_ad_run` mode) and its Slack post.

    Never raises for provider or network errors; each channel's result is recorded on its
    delivery row and returned. A channel already sent for this ad run is not sent again unless
    `force` is set (a manual re-send).

    Args:
        ad_run_id: The ad run to export.
        export: The job's export settings (block names, recipients, email mode).
        force: Send again even what was already sent.
        in_flight_lease: How long a claimed, still pending delivery is left to its sender.

    Returns:
        One outcome per channel the settings ask for (none when exports are off).

    Example:
        ```python
        from flows.export import ensure_export_limits, export_ad_run
        await ensure_export_limits(export)
        outcomes = await export_ad_run(ad_run.id, export)
        ```
    """
    logger = get_run_logger()
    channels: list[Channel] = []
    if export.wants_email and export.email_mode == "per_ad_run":
        channels.append("email")
    if export.wants_slack:
        channels.append("slack")
    if not channels:
        return []
    contents = await _load_ad_runs(AdRun.id == ad_run_id)
    if not contents:
        return _skipped(channels, f"ad run {ad_run_id} does not exist")
    content = contents[0]
    if content.ad_run.status != "completed" or not content.ads:
        return _skipped(channels, f"ad run {ad_run_id} has no generated ads to export")

    outcomes: list[DeliveryOutcome] = []
    for channel in channels:
        if channel == "email":

            async def send(claim: DeliveryClaim, secrets: list[str]) -> str:
                return await _send_email(
                    contents,
                    export,
                    claim,
                    ad_run_id=ad_run_id,
                    job_run_id=None,
                    logger=logger,
                    secrets=secrets,
                )

        else:

            async def send(claim: DeliveryClaim, secrets: list[str]) -> str:
                return await _send_slack(content, export, logger=logger, secrets=secrets)

        outcomes.append(
            await _deliver(
                channel=channel,
                tenant_id=content.ad_run.tenant_id,
                ad_run_id=ad_run_id,
                job_run_id=None,
                force=force,
                send=send,
                logger=logger,
                in_flight_lease=in_flight_lease,
            )
        )
    await _publish(outcomes, f"ad run {ad_run_id}")
    return outcomes


@task(name="export-job-run-digest", cache_policy=NO_CACHE)
async def export_job_run_digest(
    job_run_id: UUID,
    export: ExportSettings,
    *,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> list[DeliveryOutcome]:
    """Email one digest of every completed ad run of a job run (`digest` email mode).

    Slack is posted per ad run by `export_ad_run`, so a digest is email only. Never raises for
    provider or network errors.

    Args:
        job_run_id: The `scheduled_job_runs` row whose ad runs are summarised.
        export: The job's export settings.
        force: Send again even if this digest was already sent (a manual re-send).
        in_flight_lease: How long a claimed, still pending delivery is left to its sender.

    Returns:
        The email outcome, or nothing when the settings ask for no digest.

    Example:
        ```python
        from flows.export import export_job_run_digest
        outcomes = await export_job_run_digest(job_run.id, export)
        ```
    """
    logger = get_run_logger()
    if not (export.wants_email and export.email_mode == "digest"):
        return []
    contents = [
        c
        for c in await _load_ad_runs(AdRun.scheduled_job_run_id == job_run_id)
        if c.ad_run.status == "completed" and c.ads
    ]
    if not contents:
        return _skipped(["email"], f"job run {job_run_id} has no generated ads to export")

    async def send(claim: DeliveryClaim, secrets: list[str]) -> str:
        return await _send_email(
            contents,
            export,
            claim,
            ad_run_id=None,
            job_run_id=job_run_id,
            logger=logger,
            secrets=secrets,
        )

    outcome = await _deliver(
        channel="email",
        tenant_id=contents[0].ad_run.tenant_id,
        ad_run_id=None,
        job_run_id=job_run_id,
        force=force,
        send=send,
        logger=logger,
        in_flight_lease=in_flight_lease,
    )
    await _publish([outcome], f"job run {job_run_id}")
    return [outcome]
