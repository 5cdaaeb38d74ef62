"""`ad-scheduler export`: a deliberate re-send through the real CLI, tasks and fakes."""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from db.models import ExportDelivery, ScheduledJob
from db.session import session_scope
from domain.params import JobParameters
from flows.exports import export_stored_ad_run
from scheduler.commands.export import register
from tests.exports.conftest import SavedBlocks, seed_runs, settings_for
from tests.support.http_fake import FakeResend, FakeSlackWebhook

pytestmark = pytest.mark.usefixtures("use_database")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group, as in scheduler/cli.py
    register(app)
    return app


async def _invoke(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, _app(), ["export", *args])
    return result.exit_code, result.output


async def test_export_sends_only_what_was_not_sent_unless_forced(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = await seed_runs(db_url, tenant_id, storage_root, templates=("a.png", "b.png"), ads=1)
    export = settings_for(saved_blocks)
    async with session_scope() as session:
        job = await session.get_one(ScheduledJob, runs[0].job_id)
        job.parameters = JobParameters(export=export).model_dump(mode="json")
    await export_stored_ad_run(runs[0].ad_run_id, export)
    assert len(fake_slack.delivered) == 1 and len(fake_resend.delivered) == 1
    caplog.set_level(logging.INFO)

    # Re-export without --force: nothing goes out, on either channel; the output says why.
    for channel in ("slack", "email"):
        code, output = await _invoke(
            str(runs[0].ad_run_id), "--channel", channel, "--tenant", str(tenant_id)
        )
        assert code == 0, output
        assert f"{runs[0].ad_run_id}  {channel}  already_sent" in output
        assert "--force re-sends it" in output
    assert len(fake_slack.posts) == 1 and len(fake_resend.posts) == 1

    # A job run id with --channel slack sends only its ad run that was never posted.
    code, output = await _invoke(str(runs[0].job_run_id), "-c", "slack", "--tenant", str(tenant_id))
    assert code == 0, output
    assert f"{runs[0].ad_run_id}  slack  already_sent" in output
    assert f"{runs[1].ad_run_id}  slack  sent" in output
    assert len(fake_slack.posts) == 2

    # --force says what it will re-send, then re-sends it once.
    code, output = await _invoke(
        str(runs[0].ad_run_id), "--channel", "slack", "--tenant", str(tenant_id), "--force"
    )
    assert code == 0, output
    announced = f"re-sending (--force): {runs[0].ad_run_id}  slack  sent at "
    assert announced in output
    assert output.index(announced) < output.index(f"{runs[0].ad_run_id}  slack  sent  ")
    assert len(fake_slack.posts) == 3 and len(fake_resend.posts) == 1
    assert any("Manual re-send" in r.getMessage() for r in caplog.records)
    async with session_scope() as session:
        slack_row = await session.scalar(
            sa.select(ExportDelivery).where(
                ExportDelivery.ad_run_id == runs[0].ad_run_id, ExportDelivery.channel == "slack"
            )
        )
    assert slack_row is not None and (slack_row.status, slack_row.attempts) == ("sent", 2)

    # The digest of the job run: sent once, then only with --force (a fresh idempotency key).
    code, output = await _invoke(str(runs[0].job_run_id), "-c", "email", "--tenant", str(tenant_id))
    assert code == 0, output
    assert len(fake_resend.delivered) == 2
    assert len(fake_resend.delivered[-1]["attachments"]) == 2
    code, output = await _invoke(str(runs[0].job_run_id), "-c", "email", "--tenant", str(tenant_id))
    assert code == 0 and "already_sent" in output, output
    assert len(fake_resend.posts) == 2
    code, output = await _invoke(
        str(runs[0].job_run_id), "-c", "email", "--tenant", str(tenant_id), "--force"
    )
    assert code == 0, output
    assert f"re-sending (--force): {runs[0].job_run_id}  email  sent at " in output
    assert len(fake_resend.delivered) == 3
    keys = [p.headers["idempotency-key"] for p in fake_resend.posts[1:]]
    assert keys[0] != keys[1]

    # Another tenant cannot see the run.
    code, output = await _invoke(
        str(runs[0].ad_run_id), "-c", "slack", "--tenant", str(uuid.uuid4())
    )
    assert code == 2 and "no ad run or job run" in output
    assert len(fake_slack.posts) == 3
