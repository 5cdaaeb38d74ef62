"""The blocks on their own: type slugs, secrets kept in, concurrent clients, global limits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prefect.client.orchestration import get_client
from pydantic import ValidationError

from blocks.email_resend import ResendEmail
from blocks.slack_webhook import SlackIncomingWebhook
from domain.params import ExportSettings
from flows.exports import ensure_export_limits, resend_limit_name, slack_limit_name
from flows.limits import rate_limit_name
from tests.support.http_fake import FakeResend, FakeSlackWebhook


def test_block_types_do_not_collide_with_prefect_slack_webhook() -> None:
    assert ResendEmail.get_block_type_slug() == "ad-scheduler-resend-email"
    assert SlackIncomingWebhook.get_block_type_slug() == "ad-scheduler-slack-webhook"
    assert SlackIncomingWebhook.get_block_type_slug() != "slack-webhook"


def test_blocks_never_show_their_secrets() -> None:
    key, url = "re_secret_value", "https://hooks.slack.com/services/T1/B1/secret-part"
    email = ResendEmail(api_key=key, from_address="Ads <ads@example.com>")
    webhook = SlackIncomingWebhook(url=url)
    for text in (
        repr(email),
        str(email),
        email.model_dump_json(),
        repr(webhook),
        webhook.model_dump_json(),
    ):
        assert key not in text and "secret-part" not in text
    with pytest.raises(ValidationError) as raised:
        SlackIncomingWebhook(url="hooks.slack.com/services/T1/B1/secret-part")
    assert "secret-part" not in str(raised.value)


async def test_concurrent_resend_clients_keep_their_own_key_and_server() -> None:
    fakes = [FakeResend(api_key=f"re_{i}_{uuid.uuid4().hex}") for i in range(2)]
    for fake in fakes:
        fake.server.start()
    try:
        clients = [
            ResendEmail(
                api_key=f.api_key, from_address="a@example.com", base_url=f.url
            ).get_client()
            for f in fakes
        ]
        params = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
        sent = await asyncio.gather(
            *[
                client.send(params, idempotency_key=f"k-{i}-{n}")
                for n in range(5)
                for i, client in enumerate(clients)
            ]
        )
        assert len({s.id for s in sent}) == 10
        for fake in fakes:
            assert len(fake.delivered) == 5
            assert {p.headers["authorization"] for p in fake.posts} == {f"Bearer {fake.api_key}"}
    finally:
        for fake in fakes:
            fake.server.stop()


async def test_slack_client_posts_json_and_reads_ok(fake_slack: FakeSlackWebhook) -> None:
    client = SlackIncomingWebhook(url=fake_slack.webhook_url).get_client()
    await client.post({"text": "hello", "blocks": [{"type": "divider"}]})
    [post] = fake_slack.posts
    assert post.headers["content-type"] == "application/json"
    assert post.json == {"text": "hello", "blocks": [{"type": "divider"}]}


async def test_ensure_export_limits_is_idempotent_and_follows_the_blocks(
    prefect_api: str, fake_resend: FakeResend, fake_slack: FakeSlackWebhook
) -> None:
    suffix = uuid.uuid4().hex[:8]
    email, slack = f"email-{suffix}", f"slack-{suffix}"
    await ResendEmail(
        api_key=fake_resend.api_key, from_address="a@example.com", base_url=fake_resend.url
    ).save(email)
    await SlackIncomingWebhook(url=fake_slack.webhook_url).save(slack)
    export = ExportSettings(
        destination="both",
        email_recipients=["a@example.com"],
        email_block=email,
        slack_webhook_block=slack,
    )

    await ensure_export_limits(export)
    await ensure_export_limits(export)

    # The one limit mechanism (flows/limits.py): a rate window of L starts per W seconds,
    # slots without decay (decay under-grants; see that module).
    async with get_client() as client:
        resend_limit = await client.read_global_concurrency_limit_by_name(
            rate_limit_name(resend_limit_name(email))
        )
        slack_limit = await client.read_global_concurrency_limit_by_name(
            rate_limit_name(slack_limit_name(slack))
        )
    assert (resend_limit.limit, resend_limit.slot_decay_per_second) == (2, 0.0)
    assert (slack_limit.limit, slack_limit.slot_decay_per_second) == (1, 0.0)

    await ResendEmail(
        api_key=fake_resend.api_key,
        from_address="a@example.com",
        base_url=fake_resend.url,
        requests_per_second=5,
    ).save(email, overwrite=True)
    await ensure_export_limits(export)

    async with get_client() as client:
        resend_limit = await client.read_global_concurrency_limit_by_name(
            rate_limit_name(resend_limit_name(email))
        )
    assert (resend_limit.limit, resend_limit.slot_decay_per_second) == (5, 0.0)
    assert resend_limit.id is not None
