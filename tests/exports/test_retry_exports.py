"""`retry-exports`: what a retryable failure's note promises is what the deployed flow does."""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from config.settings import PROJECT_ROOT
from db.models import ExportDelivery, ScheduledJob
from db.session import session_scope
from domain.params import JobParameters
from flows.exports import (
    RETRIED_LATER,
    RETRY_EXPORTS_EVERY_MINUTES,
    RETRY_EXPORTS_MAX_ATTEMPTS,
    export_stored_ad_run,
)
from flows.retry_exports import retry_exports
from tests.exports.conftest import SavedBlocks, seed_runs, settings_for
from tests.support.http_fake import FakeSlackWebhook, Reply

pytestmark = pytest.mark.usefixtures("use_database")


async def _slack_row(ad_run_id) -> ExportDelivery:
    async with session_scope() as session:
        row = await session.scalar(
            sa.select(ExportDelivery).where(
                ExportDelivery.ad_run_id == ad_run_id, ExportDelivery.channel == "slack"
            )
        )
    assert row is not None
    return row


async def test_retryable_failures_are_sent_by_the_retry_flow_and_given_up_in_time(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
) -> None:
    runs = await seed_runs(db_url, tenant_id, storage_root, templates=("a.png", "b.png"), ads=1)
    export = settings_for(saved_blocks, destination="slack")
    async with session_scope() as session:
        job = await session.get_one(ScheduledJob, runs[0].job_id)
        job.parameters = JobParameters(export=export).model_dump(mode="json")
    # Slack is down for the run's whole export of the first ad run (every attempt answers 503).
    for _ in range(5):
        fake_slack.fail_next(503, "service_unavailable")
    [failed] = await export_stored_ad_run(runs[0].ad_run_id, export)
    assert (failed.status, failed.error_kind) == ("failed", "retryable")
    assert failed.error and RETRIED_LATER in failed.error
    # The second ad run's webhook is gone for good: a permanent failure, never retried.
    fake_slack.fail_next(404, "no_service")
    [permanent] = await export_stored_ad_run(runs[1].ad_run_id, export)
    assert (permanent.status, permanent.error_kind) == ("failed", "permanent")
    posts = len(fake_slack.posts)

    # The deployed flow, run here against the real Prefect server: Slack is back.
    report = await retry_exports(lease_minutes=30, tenant_id=tenant_id)
    assert (report.looked_at, report.sent, report.failed) == (1, 1, 0)
    assert len(fake_slack.posts) == posts + 1 and len(fake_slack.delivered) == 1
    row = await _slack_row(runs[0].ad_run_id)
    assert (row.status, row.attempts, row.error_message) == ("sent", 2, None)
    assert (await _slack_row(runs[1].ad_run_id)).status == "failed"

    # A second pass finds nothing to do.
    again = await retry_exports(lease_minutes=30, tenant_id=tenant_id)
    assert again.looked_at == 0 and len(fake_slack.posts) == posts + 1


async def test_retries_give_up_after_the_attempts_the_note_promises(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
) -> None:
    runs = await seed_runs(db_url, tenant_id, storage_root, ads=1)
    export = settings_for(saved_blocks, destination="slack")
    async with session_scope() as session:
        job = await session.get_one(ScheduledJob, runs[0].job_id)
        job.parameters = JobParameters(export=export).model_dump(mode="json")
    for _ in range(10):
        fake_slack.fail_next(503, "service_unavailable")
    await export_stored_ad_run(runs[0].ad_run_id, export)  # attempt 1
    report = await retry_exports(
        max_attempts=2, lease_minutes=30, tenant_id=tenant_id
    )  # attempt 2, then give up
    assert (report.looked_at, report.failed, report.gave_up) == (1, 1, 1)
    row = await _slack_row(runs[0].ad_run_id)
    assert (row.status, row.error_kind, row.attempts) == ("failed", "permanent", 2)
    assert row.error_message and "automatic retries gave up" in row.error_message
    assert (
        await retry_exports(max_attempts=2, lease_minutes=30, tenant_id=tenant_id)
    ).looked_at == 0
    assert len(fake_slack.delivered) == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_prefect_yaml_deploys_the_retry_flow_as_often_as_the_note_says(db_url: str) -> None:
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    [deployment] = [
        d for d in config["deployments"] if d["entrypoint"].startswith("flows/retry_exports.py")
    ]
    module, _, name = deployment["entrypoint"].partition(":")
    flow = getattr(importlib.import_module(module[:-3].replace("/", ".")), name)
    assert flow.name == "retry-exports"
    [schedule] = deployment["schedules"]
    assert schedule["interval"] == RETRY_EXPORTS_EVERY_MINUTES * 60 and schedule["active"]
    assert f"up to {RETRY_EXPORTS_MAX_ATTEMPTS} attempts" in deployment["description"]
    assert deployment["concurrency_limit"]["limit"] == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bad_retry_parameters_are_refused_naming_the_field(db_url: str, prefect_api) -> None:
    state = await retry_exports(max_attempts=0, return_state=True)  # type: ignore[call-overload]
    assert state.is_failed()
    assert "max_attempts" in (state.message or "")


async def test_a_partly_posted_slack_export_is_not_retried_automatically(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_slack: FakeSlackWebhook,
    public_storage: str,
    waits: list[float],
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=60, image_size=8)  # 2 messages
    export = settings_for(saved_blocks, destination="slack")
    fake_slack.script.append(Reply(200, b"ok", {"content-type": "text/html"}))  # part 1 posted
    for _ in range(5):
        fake_slack.fail_next(503, "service_unavailable")  # part 2 never makes it

    [failed] = await export_stored_ad_run(run.ad_run_id, export)

    assert (failed.status, failed.error_kind) == ("failed", "permanent")
    assert failed.error and "after 1 of 2 messages were posted" in failed.error
    assert (await retry_exports(lease_minutes=30, tenant_id=tenant_id)).looked_at == 0
    assert len(fake_slack.posts) == 6  # part 1 once, part 2 five times; nothing re-posted
