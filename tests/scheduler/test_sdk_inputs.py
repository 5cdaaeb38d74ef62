"""Inputs as real users send them, through the SDK on the real Prefect server and both databases:
schedules Prefect would refuse, dangling block references, and a next run that is Prefect's."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

from db.models import ScheduledJob
from db.session import session_scope
from domain.cron import next_fire_times
from domain.errors import InvalidJobSpec
from scheduler.sdk import AdScheduler, PrefectApiError, probe_prefect_api
from tests.scheduler.conftest import Catalog, recurring_spec, tenant_deployments, tenant_jobs


async def _nothing_written(catalog: Catalog) -> None:
    assert await tenant_jobs(catalog.db_url, catalog.tenant_id) == []
    assert await tenant_deployments(catalog.tenant_id) == []


@pytest.mark.parametrize(
    ("schedule", "field", "says"),
    [
        ({"cron": "0 0 31 2 *", "timezone": "UTC"}, "schedule.cron", "never fires"),
        ({"cron": "0 0 31 4 *", "timezone": "Europe/Berlin"}, "schedule.cron", "never fires"),
        ({"cron": "0 9 * * 1", "timezone": "posixrules"}, "schedule.timezone", "unknown"),
        ({"cron": "0 9 * * 1", "timezone": "right/UTC"}, "schedule.timezone", "unknown"),
    ],
)
async def test_schedules_prefect_would_not_run_are_refused(
    ads: AdScheduler, catalog: Catalog, schedule: dict[str, str], field: str, says: str
) -> None:
    spec = recurring_spec(catalog, schedule={"type": "recurring", **schedule})
    with pytest.raises(InvalidJobSpec) as caught:
        await ads.create(spec)
    assert caught.value.fields == [field]
    assert says in str(caught.value) and "allowed:" in str(caught.value)
    await _nothing_written(catalog)


async def test_misfire_grace_range(ads: AdScheduler, catalog: Catalog) -> None:
    with pytest.raises(InvalidJobSpec) as caught:
        await ads.create(recurring_spec(catalog, misfire_grace_seconds=5))
    assert caught.value.fields == ["misfire_grace_seconds"]
    assert "0 (no limit: late runs always run) or 60..604800" in str(caught.value)
    await _nothing_written(catalog)
    job = await ads.create(recurring_spec(catalog, misfire_grace_seconds=0))
    assert job.misfire_grace_seconds == 0


async def test_dangling_block_references_are_named(ads: AdScheduler, catalog: Catalog) -> None:
    spec = recurring_spec(
        catalog,
        ad={"generator_block": "no-such-generator"},
        export={
            "destination": "both",
            "email_recipients": ["team@example.com"],
            "email_block": "no-such-email",
            "slack_webhook_block": "ad-scheduler-resend-email/not-a-slack-block",
        },
    )
    with pytest.raises(InvalidJobSpec) as caught:
        await ads.create(spec)
    assert caught.value.fields == [
        "export.email_block",
        "export.slack_webhook_block",
        "ad.generator_block",
    ]
    text = str(caught.value)
    assert "no Resend email block named 'no-such-email' is saved" in text
    assert "'ad-scheduler-resend-email' block; allowed: a Slack webhook block" in text
    assert "no generator block named 'no-such-generator'" in text
    await _nothing_written(catalog)


async def test_saved_blocks_are_accepted(ads: AdScheduler, catalog: Catalog) -> None:
    from pydantic import SecretStr

    from blocks.email_resend import ResendEmail

    name = f"mail-{uuid.uuid4().hex[:8]}"
    await ResendEmail(api_key=SecretStr("re_x"), from_address="Ads <a@example.com>").asave(name)
    job = await ads.create(
        recurring_spec(
            catalog,
            export={
                "destination": "email",
                "email_recipients": ["team@example.com"],
                "email_block": f"ad-scheduler-resend-email/{name}",
            },
        )
    )
    assert job.parameters["export"]["email_block"] == f"ad-scheduler-resend-email/{name}"


async def _prefect_next_runs(deployment_id: uuid.UUID, count: int) -> list[datetime]:
    """The expected start times of the deployment's first `count` scheduled runs, once
    Prefect's scheduler service has created them (polled, with a deadline)."""
    deadline = time.monotonic() + 30
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=count,
            )
            if len(runs) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
    return [
        datetime.fromtimestamp(r.expected_start_time.timestamp(), tz=UTC)
        for r in runs
        if r.expected_start_time
    ]


async def _view_next_run(db_url: str, job_id: uuid.UUID) -> tuple[bool, Any]:
    async with session_scope(db_url) as session:
        row = (
            await session.execute(
                sa.text("SELECT next_run_at FROM v_active_scheduled_jobs WHERE id = :id"),
                {"id": job_id if "postgres" in db_url else job_id.hex},
            )
        ).first()
    if row is None:
        return False, None
    value = row[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return True, value


@pytest.mark.parametrize(
    ("cron", "timezone"),
    [("0 9 * * 1", "America/New_York"), ("30 2 * * *", "Europe/Berlin")],
)
async def test_next_run_is_prefects_through_pause_and_resume(
    ads: AdScheduler, catalog: Catalog, cron: str, timezone: str
) -> None:
    job = await ads.create(
        recurring_spec(catalog, schedule={"type": "recurring", "cron": cron, "timezone": timezone})
    )
    assert job.prefect_deployment_id is not None
    expected = next_fire_times(cron, timezone, count=3)
    assert job.next_run_at == expected[0]
    assert await _prefect_next_runs(job.prefect_deployment_id, 3) == expected
    assert await _view_next_run(catalog.db_url, job.id) == (True, expected[0])

    paused = await ads.pause(job.id)
    assert paused.next_run_at is None
    assert (await ads.get(job.id)).next_run_at is None
    assert [j.next_run_at for j in await ads.list_jobs()] == [None]
    assert await _view_next_run(catalog.db_url, job.id) == (False, None)

    # A long pause: the stored value is stale (as if its time passed while paused).
    async with session_scope(catalog.db_url) as session:
        await session.execute(
            sa.update(ScheduledJob)
            .where(ScheduledJob.id == job.id)
            .values(next_run_at=datetime.now(UTC) - timedelta(days=3))
        )
    resumed = await ads.resume(job.id)
    expected = next_fire_times(cron, timezone, count=3)
    assert resumed.next_run_at == expected[0] and resumed.next_run_at > datetime.now(UTC)
    assert await _prefect_next_runs(job.prefect_deployment_id, 3) == expected
    assert (await ads.get(job.id)).next_run_at == expected[0]

    updated = await ads.update(
        job.id, schedule={"type": "recurring", "cron": "15 6 * * *", "timezone": "Asia/Kolkata"}
    )
    assert updated.next_run_at == next_fire_times("15 6 * * *", "Asia/Kolkata")[0]


async def test_prefect_unreachable_is_said_within_seconds(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = "http://127.0.0.1:9/api"  # discard port: nothing listens
    with temporary_settings(updates={PREFECT_API_URL: url}):
        started = time.monotonic()
        with pytest.raises(PrefectApiError) as caught:
            async with AdScheduler(catalog.tenant_id, database_url=catalog.db_url) as ads:
                await ads.create(recurring_spec(catalog))
        assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "http://127.0.0.1:9/api" in message and "PREFECT_API_URL" in message
    assert "ad-scheduler up" in message
    assert caught.value.__cause__ is not None
    with temporary_settings(updates={PREFECT_API_URL: ""}):
        with pytest.raises(PrefectApiError, match="PREFECT_API_URL is not set"):
            await probe_prefect_api()
