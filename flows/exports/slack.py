"""Slack exports through an incoming webhook: one ad run as one or more Block Kit posts."""

from __future__ import annotations

from typing import Any

from blocks.slack_webhook import SlackDeliveryError, SlackIncomingWebhook
from blocks.storage import AdStorage
from flows.exports.content import AdRunContent, compose_slack_messages
from flows.exports.sending import send_with_retries
from flows.limits import ProviderSlots


async def post_to_slack(
    content: AdRunContent,
    *,
    block: SlackIncomingWebhook,
    storage: AdStorage,
    slots: ProviderSlots | None,
    logger: Any,
) -> str:
    """Post one ad run; returns what was posted (`slack-webhook:<n>-message(s)`).

    Raises:
        SlackDeliveryError: Slack refused a post (after retries). When an earlier part was
            already posted the error is made permanent: Slack has no idempotency key, and
            retrying would post those parts again.
    """
    messages = compose_slack_messages(content, public_url=storage.public_url)
    client = block.get_client()
    for number, message in enumerate(messages, start=1):
        try:
            await send_with_retries(
                lambda message=message: client.post(message),  # type: ignore[misc]
                slots=slots,
                what=f"Slack post {number}/{len(messages)} of ad run {content.ad_run_id}",
                logger=logger,
            )
        except SlackDeliveryError as exc:
            if number > 1:
                exc.message += (
                    f" (after {number - 1} of {len(messages)} messages were posted; not retried "
                    "automatically, which would post those again: check Slack, then re-send "
                    "with `ad-scheduler export --force`)"
                )
                exc.kind = "permanent"
            raise
    logger.info(
        "Posted ad run %s to Slack (%d ad(s), %d message(s))",
        content.ad_run_id,
        len(content.ads),
        len(messages),
    )
    return f"slack-webhook:{len(messages)}-message{'s' if len(messages) != 1 else ''}"
