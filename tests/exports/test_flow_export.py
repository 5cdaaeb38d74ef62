"""Exports through the real flow: one post per ad run; a dead webhook keeps the ads."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from blocks.slack_webhook import SlackIncomingWebhook
from db.models import GeneratedAd, ScheduledJobRun
from db.session import session_scope
from domain.params import AdParameters, ExportSettings, JobParameters
from flows.scheduled_job import run_scheduled_job
from tests.exports.fakes import FakeSlackWebhook
from tests.flows.support import job_with_templates

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


async def _job_posting_to(url: str, tenant_id: uuid.UUID):
    block = f"slack-{uuid.uuid4().hex[:10]}"
    await SlackIncomingWebhook(url=SecretStr(url)).asave(block)
    params = JobParameters(
        ad=AdParameters(variations=1),
        export=ExportSettings(destination="slack", slack_webhook_block=block),
    )
    return await job_with_templates(
        tenant_id, templates=2, template_count=2, parameters=params.model_dump(mode="json")
    )


async def _row(job_id) -> ScheduledJobRun:
    async with session_scope() as s:
        return (
            await s.scalars(
                sa.select(ScheduledJobRun).where(ScheduledJobRun.scheduled_job_id == job_id)
            )
        ).one()


async def test_each_ad_run_is_posted_once(tenant_id, fake_slack: FakeSlackWebhook) -> None:
    job = await _job_posting_to(fake_slack.webhook_url, tenant_id)
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed()
    assert len(fake_slack.delivered) == 2
    texts = " ".join(str(p.get("text")) for p in fake_slack.delivered)
    assert "template sample 01" in texts and "template sample 02" in texts
    row = await _row(job.id)
    assert row.status == "completed" and row.error_message is None


async def test_a_dead_webhook_keeps_the_ads_and_records_the_error(
    tenant_id, fake_slack: FakeSlackWebhook
) -> None:
    dead = fake_slack.webhook_url + "-deleted"  # Slack answers 404 no_service
    job = await _job_posting_to(dead, tenant_id)
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed()
    row = await _row(job.id)
    assert row.status == "completed"
    assert row.error_message and row.error_message.startswith("export failed: slack")
    assert "reconfigure" in row.error_message.lower()
    assert dead not in row.error_message and fake_slack.secret_path not in row.error_message
    async with session_scope() as s:
        ads = await s.scalar(
            sa.select(sa.func.count())
            .select_from(GeneratedAd)
            .where(GeneratedAd.ad_run_id.in_(row.ad_run_ids or []))
        )
    assert ads == 2
