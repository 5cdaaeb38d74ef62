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
from flows.export import export_ad_run
from scheduler.commands.export import register
from scheduler.params import JobParameters
from tests.exports.conftest import SavedBlocks, seed_runs, settings_for
from tests.exports.fakes import FakeResend, FakeSlackWebhook

pytestmark = pytest.mark.usefixtures("use_database")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group, as in scheduler/cli.py
    register(app)
    return app


async def _invoke(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, _app(), ["export", *args])
    return result.exit_code, result.output


async def test_export_command_resends_on_purpose(
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
    await export_ad_run(runs[0].ad_run_id, export)
    assert len(fake_slack.delivered) == 1 and len(fake_resend.delivered) == 1
    caplog.set_level(logging.INFO)

    code, output = await _invoke(
        str(runs[0].ad_run_id), "--channel", "slack", "--tenant", str(tenant_id)
    )
    assert code == 0, output
    assert f"{runs[0].ad_run_id}  slack  sent" in output
    assert len(fake_slack.delivered) == 2 and len(fake_resend.delivered) == 1
    assert any("Manual re-send of ad run" in r.getMessage() for r in caplog.records)

    # A job run id with --channel email re-sends the job run's digest (both ad runs).
    code, output = await _invoke(str(runs[0].job_run_id), "-c", "email", "--tenant", str(tenant_id))
    assert code == 0, output
    assert len(fake_resend.delivered) == 2
    assert len(fake_resend.delivered[-1]["attachments"]) == 2
    async with session_scope() as session:
        slack_row = await session.scalar(
            sa.select(ExportDelivery).where(
                ExportDelivery.ad_run_id == runs[0].ad_run_id, ExportDelivery.channel == "slack"
            )
        )
    assert slack_row is not None and (slack_row.status, slack_row.attempts) == ("sent", 2)

    # Another tenant cannot see the run.
    code, output = await _invoke(
        str(runs[0].ad_run_id), "-c", "slack", "--tenant", str(uuid.uuid4())
    )
    assert code == 2 and "no ad run or job run" in output
    assert len(fake_slack.delivered) == 2
