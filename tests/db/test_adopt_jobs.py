"""`ad-scheduler jobs adopt`: the jobs already in the team's database become working jobs.

Real PostgreSQL (the team's database, adopted by `db upgrade`), a real Prefect server, real
template images in local storage; one adopted job's run is executed in this process.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from blocks.email_resend import ResendEmail
from blocks.slack_webhook import SlackIncomingWebhook
from blocks.storage import default_storage
from config import get_settings
from db.migrate import downgrade, upgrade
from db.models import ScheduledJob
from db.session import dispose_engines, session_scope
from db.types import utcnow
from flows import deployment_sync as dep
from flows.sample_data import template_png
from flows.templates import sync_template_catalog
from scheduler.cli import app
from scheduler.sdk import slack_block_name
from tests.conftest import require_postgres
from tests.flows.support import execute, scheduled_run
from tests.support.databases import drop_pg_database
from tests.support.legacy_database import (
    JOB_BAD,
    JOB_COMPLETED,
    JOB_DONE_BY_HISTORY,
    JOB_ONE_TIME,
    JOB_PAUSED,
    JOB_RECURRING,
    PRODUCT_TRAIL,
    create_legacy_database,
)

runner = CliRunner()
TEMPLATES = ("tpl-a.png", "tpl-b.png", "tpl-c.png", "tpl-d.png", "tpl-e.png")
SLACK_URL = "https://hooks.slack.com/services/T0LEGACY/B0LEGACY/legacysecret"


@pytest_asyncio.fixture
async def adopted(
    postgres_available: bool,
    prefect_api: str,
    data_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, uuid.UUID]]:
    """The team's database after `db upgrade`, its templates in storage and in the catalog."""
    require_postgres(postgres_available)
    name, url = await create_legacy_database()
    tenant = uuid.uuid4()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("AD_SCHEDULER_BASE_DEPLOYMENT", "no-such-base")
    get_settings.cache_clear()
    try:
        await asyncio.to_thread(upgrade, url, tenant_id=tenant)
        storage = default_storage()
        for index, template in enumerate(TEMPLATES):
            await storage.write(storage.template_path(template), template_png(index))
        await sync_template_catalog(tenant, storage)
        # Registration checks every block a job names: the email block the team will use.
        await ResendEmail(api_key="re_test_not_used", from_address="Ads <ads@example.com>").asave(
            "legacy-email", overwrite=True
        )
        yield url, tenant
    finally:
        await dispose_engines()
        get_settings.cache_clear()
        await drop_pg_database(name)


async def _adopt_cli(tenant: uuid.UUID) -> Any:
    args = ["jobs", "adopt", "--email-block", "legacy-email", "--tenant", str(tenant)]
    return await asyncio.to_thread(runner.invoke, app, args)


async def _row(url: str, job_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        record = await conn.fetchrow(
            "SELECT * FROM scheduled_jobs WHERE id = $1", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
    assert record is not None
    return dict(record)


async def test_jobs_adopt_deploys_each_job_and_reports_the_bad_one(
    adopted: tuple[str, uuid.UUID],
) -> None:
    url, tenant = adopted
    bad_before = await _row(url, JOB_BAD)

    result = await _adopt_cli(tenant)
    out = result.output
    assert result.exit_code == 1, out  # one row could not be adopted
    assert "5 job(s) adopted, 1 not adopted" in out
    assert "✗ not adopted (row unchanged): Broken job" in out
    assert "parameters.num_variations:" in out and "parameters.color_mode:" in out
    assert SLACK_URL not in out and "legacysecret" not in out
    assert "Traceback" not in out
    assert "1 template usage row(s) renamed to the catalog's storage names" in out
    # The bad row is untouched.
    assert await _row(url, JOB_BAD) == bad_before

    async with session_scope() as session:
        jobs = {str(j.id): j for j in (await session.scalars(_tenant_jobs(tenant))).all()}
    recurring, paused, completed, one_time = (
        jobs[JOB_RECURRING],
        jobs[JOB_PAUSED],
        jobs[JOB_COMPLETED],
        jobs[JOB_ONE_TIME],
    )
    assert jobs[JOB_BAD].prefect_deployment_id is None
    # Status, counters and parameters, in the project's own terms.
    assert (recurring.status, recurring.runs_completed, recurring.max_runs) == ("active", 2, 5)
    assert recurring.timezone == "UTC" and recurring.next_run_at is not None
    assert recurring.parameters["ad"] == {
        "variations": 2,
        "content_source": "hooks",
        "color_mode": "brand",
        "image_mode": "auto",
        "product_image": None,
        "generator_block": None,
    }
    assert (paused.status, completed.status, completed.runs_completed) == ("paused", "completed", 1)
    # Active in the old table, but its one allowed run is in the history: completed.
    done = jobs[JOB_DONE_BY_HISTORY]
    assert (done.status, done.runs_completed, done.next_run_at) == ("completed", 1, None)
    assert "status completed (was active: completed by its history)" in out
    assert one_time.parameters["export"]["email_recipients"] == [
        "team@example.com",
        "boss@example.com",
    ]
    assert one_time.parameters["export"]["email_block"] == "legacy-email"
    assert one_time.template_ids == ["tpl-a.png", "tpl-e.png"]
    # The Slack URL left the row for the job's secret block.
    assert SLACK_URL not in json.dumps(paused.parameters)
    assert paused.parameters["export"]["slack_webhook_block"] == slack_block_name(paused.id)
    block = await SlackIncomingWebhook.aload(slack_block_name(paused.id))
    assert block.url.get_secret_value() == SLACK_URL
    assert all(j.deployment_name for j in (recurring, paused, completed, one_time))

    # Each adopted job has its deployment with the right schedule and pause state.
    async with get_client() as client:
        for job, cron, paused_flag, schedule_active in (
            (recurring, "0 9 * * 1", False, True),
            (paused, "30 14 * * *", True, True),
            (completed, "0 8 * * *", True, False),
            (done, "0 7 * * *", True, False),
        ):
            assert job.prefect_deployment_id is not None
            deployment = await client.read_deployment(job.prefect_deployment_id)
            assert deployment.paused is paused_flag, job.name
            assert deployment.parameters == {"job_id": str(job.id)}
            (schedule,) = await client.read_deployment_schedules(deployment.id)
            assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, "UTC")
            assert schedule.active is schedule_active, job.name
        assert one_time.prefect_deployment_id is not None
        assert await client.read_deployment_schedules(one_time.prefect_deployment_id) == []
        (pending,) = await dep.pending_sdk_runs(
            client, one_time.prefect_deployment_id, dep.ONE_TIME_TAG
        )
        assert pending.expected_start_time is not None
        assert one_time.scheduled_at is not None
        assert pending.expected_start_time.timestamp() == one_time.scheduled_at.timestamp()

    # Running it again adopts nothing twice: same deployments, the bad row reported again.
    again = await _adopt_cli(tenant)
    assert "0 job(s) adopted, 1 not adopted" in again.output
    async with session_scope() as session:
        after = {
            str(j.id): j.prefect_deployment_id for j in await session.scalars(_tenant_jobs(tenant))
        }
    assert after == {k: v.prefect_deployment_id for k, v in jobs.items()}

    # A scheduled run of the adopted recurring job picks only templates its product never used
    # (the old usage rows count), and counts toward max_runs after the two old runs.
    assert recurring.prefect_deployment_id is not None
    run = await scheduled_run(recurring.prefect_deployment_id, recurring.id, utcnow())
    state = await execute(run)
    assert state.is_completed(), state.message
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        made = await conn.fetch(
            "SELECT template_storage_name FROM ad_runs WHERE flow_run_id = $1", run.id
        )
        used = await conn.fetch(
            "SELECT template_storage_name, use_count FROM product_template_usage "
            "WHERE product_id = $1",
            uuid.UUID(PRODUCT_TRAIL),
        )
    finally:
        await conn.close()
    picked = {r[0] for r in made}
    assert len(picked) == 2 and picked <= {"tpl-c.png", "tpl-d.png", "tpl-e.png"}
    assert {r[0]: r[1] for r in used} == {"tpl-a.png": 1, "tpl-b.png": 1} | dict.fromkeys(picked, 1)
    async with session_scope() as session:
        job = await session.get(ScheduledJob, recurring.id)
    assert job is not None and job.runs_completed == 3

    # The bad row, fixed by a person: a claimed run count without history is refused (it would
    # mean extra runs), then, corrected, the row is adopted.
    await _execute(
        url,
        "UPDATE scheduled_jobs SET parameters = '{\"num_variations\": 2}', runs_completed = 3 "
        f"WHERE id = '{JOB_BAD}'",
    )
    refused = await _adopt_cli(tenant)
    assert "runs_completed: 3 runs completed, but scheduled_job_runs holds 0" in refused.output
    await _execute(url, f"UPDATE scheduled_jobs SET runs_completed = 0 WHERE id = '{JOB_BAD}'")
    fixed = await _adopt_cli(tenant)
    assert fixed.exit_code == 0, fixed.output
    assert "1 job(s) adopted, 0 not adopted" in fixed.output

    # A downgrade after the project has worked keeps the team's tables and every row in them,
    # the project's own rows included (in the columns that were there before).
    await dispose_engines()
    await asyncio.to_thread(downgrade, url)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        counts = {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in (
                "products",
                "ad_runs",
                "scheduled_jobs",
                "scheduled_job_runs",
                "product_template_usage",
            )
        }
        tables = {
            r[0]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    finally:
        await conn.close()
    assert counts == {
        "products": 3,
        "ad_runs": 5,
        "scheduled_jobs": 6,
        "scheduled_job_runs": 6,
        "product_template_usage": 5,
    }
    assert "brands" not in tables and "ad_templates" not in tables


async def test_jobs_adopt_before_db_upgrade_says_what_to_do(
    postgres_available: bool, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres(postgres_available)
    name, url = await create_legacy_database()
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = await _adopt_cli(uuid.uuid4())
        assert result.exit_code == 1
        assert "cannot read the jobs to adopt" in result.output
        assert "ad-scheduler db upgrade" in result.output
        assert "Traceback" not in result.output
    finally:
        get_settings.cache_clear()
        await drop_pg_database(name)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _tenant_jobs(tenant: uuid.UUID) -> Any:
    import sqlalchemy as sa

    return sa.select(ScheduledJob).where(ScheduledJob.tenant_id == tenant)
