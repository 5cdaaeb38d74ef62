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
from tests.flows.support import job_with_templates
from tests.support.http_fake import FakeSlackWebhook
from tests.support.task_runs import final_task_runs

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

    # In the Prefect UI each export is a Failed task run whose message is the whole reason.
    # select, 2 generations, at least one usage record, 2 exports
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    task_runs = await final_task_runs(flow_run_id, at_least=6)
    exports = [t for t in task_runs if t.name.startswith("export ")]
    assert len(exports) == 2
    for task_run in exports:
        assert task_run.state is not None and task_run.state.is_failed()
        message = task_run.state.message or ""
        assert message.startswith(
            "export failed — slack: Slack refused the webhook (404 no_service)"
        )
        assert message.endswith(
            "(create a new incoming webhook and save its URL in the Slack webhook block)"
        )
        assert dead not in message and fake_slack.secret_path not in message
    generated = [t for t in task_runs if t.name.startswith("generate ")]
    assert generated and all(t.state and t.state.is_completed() for t in generated)
