"""Email exports through Resend: read the ads once, compose, send under an idempotency key.

Module named `email.py` inside the package only; it is imported as `flows.exports.email` and
never shadows the standard library's `email` (absolute imports).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from blocks.email_resend import ResendEmail
from blocks.storage import AdStorage
from db.queries.deliveries import DeliveryClaim
from flows.exports.content import (
    TOO_LARGE,
    UNREADABLE,
    AdRunContent,
    attachment_cost,
    check_recipients,
    compose_email,
    email_budget,
)
from flows.exports.records import ExportError
from flows.exports.sending import send_with_retries
from flows.limits import ProviderSlots


def email_idempotency_key(
    claim: DeliveryClaim, *, ad_run_id: UUID | None = None, job_run_id: UUID | None = None
) -> str:
    """Resend idempotency key: the run and channel; a forced re-send gets a fresh one."""
    subject = f"ad-run/{ad_run_id}" if ad_run_id is not None else f"job-run/{job_run_id}"
    key = f"ad-scheduler/{subject}/email"
    return f"{key}/resend-{claim.attempt}" if claim.forced else key


async def read_images(
    storage: AdStorage, contents: Sequence[AdRunContent], *, max_message_bytes: int
) -> dict[str, bytes | str]:
    """Each ad's bytes, in order, while the email stays under `max_message_bytes`.

    Returns:
        Per storage path, the bytes, or why the image is left out (`TOO_LARGE`, `UNREADABLE`).
    """
    budget = email_budget(max_message_bytes)
    used = 0
    images: dict[str, bytes | str] = {}
    for content in contents:
        for ad in content.ads:
            try:
                data = await storage.read(ad.storage_path)
            except (OSError, ValueError):
                images[ad.storage_path] = UNREADABLE
                continue
            cost = attachment_cost(len(data))
            if used + cost > budget:
                images[ad.storage_path] = TOO_LARGE
                continue
            used += cost
            images[ad.storage_path] = data
    return images


async def send_email(
    contents: Sequence[AdRunContent],
    *,
    block: ResendEmail,
    storage: AdStorage,
    recipients: Sequence[str],
    claim: DeliveryClaim,
    ad_run_id: UUID | None,
    job_run_id: UUID | None,
    slots: ProviderSlots | None,
    logger: Any,
) -> str:
    """Email the ads of `contents` (one ad run, or a job run's digest); returns Resend's id.

    Images go inline (`cid:`) in order while the email stays under the block's
    `max_message_bytes` (Resend: 40 MB after base64); the rest are named in a sentence.

    Raises:
        ExportError: No recipients, or more than Resend accepts.
        EmailDeliveryError: Resend refused the email (after retries) or could not be reached.
    """
    problem = check_recipients(recipients)
    if problem:
        raise ExportError(problem)
    images = await read_images(storage, contents, max_message_bytes=block.max_message_bytes)
    params = compose_email(
        contents,
        images=images,
        from_address=block.from_address,
        reply_to=block.reply_to,
        recipients=recipients,
        digest_job_run_id=job_run_id,
    )
    client = block.get_client()
    key = email_idempotency_key(claim, ad_run_id=ad_run_id, job_run_id=job_run_id)
    subject = f"ad run {ad_run_id}" if ad_run_id else f"job run {job_run_id}"
    sent = await send_with_retries(
        lambda: client.send(params, idempotency_key=key),
        slots=slots,
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
