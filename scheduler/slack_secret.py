"""A job's Slack webhook URL lives in its own secret block, never in the job's parameters."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from pydantic import SecretStr

from blocks.slack_webhook import SlackIncomingWebhook
from scheduler.undo import Undo

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

SLACK_BLOCK_SLUG = SlackIncomingWebhook.get_block_type_slug()


def slack_block_name(job_id: uuid.UUID) -> str:
    """Name of the `SlackIncomingWebhook` block holding a job's webhook URL."""
    return f"ad-slack-{job_id}"


async def store_slack_webhook(
    client: PrefectClient, job_id: uuid.UUID, url: SecretStr, undo: Undo
) -> str:
    """Save the URL in the job's block (overwriting it); registers the undo; the block's name."""
    name = slack_block_name(job_id)
    try:
        previous = await SlackIncomingWebhook.aload(name, client=client)
    except ValueError:
        previous = None
    block = SlackIncomingWebhook(url=SecretStr(url.get_secret_value()))
    await block.asave(name, overwrite=True, client=client)
    if previous is None:
        undo.add(lambda: delete_slack_block(client, name))
    else:
        undo.add(lambda: previous.asave(name, overwrite=True, client=client))
    return name


async def delete_slack_block(client: PrefectClient, name: str) -> None:
    """Delete a Slack webhook block (nothing when it does not exist)."""
    from prefect.exceptions import ObjectNotFound

    try:
        document = await client.read_block_document_by_name(name, block_type_slug=SLACK_BLOCK_SLUG)
    except ObjectNotFound:
        return
    await client.delete_block_document(document.id)
