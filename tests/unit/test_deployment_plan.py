"""`plan_for`: the deployment a job row should have (pure: no database, no Prefect server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

from db.models import ScheduledJob
from flows.deployment_sync import (
    PULL_STEP,
    SCHEDULE_SLUG,
    deployment_name,
    one_time_idempotency_key,
    plan_for,
)

JOB_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
AT = datetime(2026, 12, 24, 9, tzinfo=UTC)


def _job(**kw: object) -> ScheduledJob:
    values: dict[str, object] = {
        "id": JOB_ID,
        "tenant_id": uuid.UUID(int=2),
        "brand_id": uuid.UUID(int=3),
        "product_id": uuid.UUID(int=4),
        "name": "Monday Promo!",
        "status": "active",
        "schedule_type": "recurring",
        "cron_expression": "0 9 * * 1",
        "timezone": "America/New_York",
        "template_mode": "unused",
        "template_count": 3,
        "exhausted_policy": "recycle",
        "overlap_policy": "skip",
        "misfire_grace_seconds": 3600,
        "jitter_seconds": 0,
        "max_runs": 8,
        "description": "",
        "parameters": {"ad": {"variations": 3}, "export": {"destination": "slack"}},
    }
    values.update(kw)
    return ScheduledJob(**values)


def test_an_active_recurring_job_has_an_active_cron_schedule_in_its_zone() -> None:
    plan = plan_for(_job(), "Trail Runner 2", "Acme")
    assert plan.name == f"monday-promo-{JOB_ID}" == deployment_name(JOB_ID, "Monday Promo!")
    assert (plan.paused, plan.schedule_active, plan.one_time_at) == (False, True, None)
    (create,) = plan.schedule_creates()
    assert (create.slug, create.active) == (SCHEDULE_SLUG, True)
    schedule = plan.cron_schedule()
    assert schedule is not None
    assert (schedule.cron, schedule.timezone) == ("0 9 * * 1", "America/New_York")
    # Only the job id is a parameter: nothing else (and never a secret) reaches the UI.
    assert plan.parameters == {"job_id": str(JOB_ID)}
    assert f"job:{JOB_ID}" in plan.tags and "ad-scheduler" in plan.tags
    assert (
        "Trail Runner 2" in plan.description and "stops after 8 completed runs" in plan.description
    )


@pytest.mark.parametrize(
    ("status", "paused", "schedule_active"),
    [("active", False, True), ("paused", True, True), ("completed", True, False)],
)
def test_status_decides_pause_and_schedule(
    status: str, paused: bool, schedule_active: bool
) -> None:
    plan = plan_for(_job(status=status), "P", "B")
    assert (plan.paused, plan.schedule_active) == (paused, schedule_active)


def test_a_paused_job_keeps_its_schedule_so_resume_restores_it() -> None:
    paused = plan_for(_job(status="paused"), "P", "B")
    active = plan_for(_job(status="active"), "P", "B")
    assert paused.cron_schedule() == active.cron_schedule()


def test_a_one_time_job_has_no_cron_and_one_keyed_run() -> None:
    plan = plan_for(_job(schedule_type="one_time", cron_expression=None, scheduled_at=AT), "P", "B")
    assert plan.cron_schedule() is None and plan.schedule_creates() == []
    assert plan.one_time_at == AT
    assert one_time_idempotency_key(JOB_ID, AT) == one_time_idempotency_key(JOB_ID, AT)
    assert one_time_idempotency_key(JOB_ID, AT) != one_time_idempotency_key(
        JOB_ID, AT.replace(hour=10)
    )


@pytest.mark.parametrize(
    ("overlap", "strategy"),
    [("skip", ConcurrencyLimitStrategy.CANCEL_NEW), ("queue", ConcurrencyLimitStrategy.ENQUEUE)],
)
def test_overlap_policy_is_the_concurrency_collision_strategy(
    overlap: str, strategy: ConcurrencyLimitStrategy
) -> None:
    plan = plan_for(_job(overlap_policy=overlap), "P", "B")
    assert plan.concurrency_options.collision_strategy == strategy


def test_the_stored_deployment_name_is_kept_when_the_job_is_renamed() -> None:
    plan = plan_for(_job(name="Renamed", deployment_name="monday-promo-x"), "P", "B")
    assert plan.name == "monday-promo-x"


def test_the_plan_is_a_value_equal_for_equal_rows() -> None:
    assert plan_for(_job(), "P", "B") == plan_for(_job(), "P", "B")
    assert plan_for(_job(), "P", "B") != plan_for(_job(status="paused"), "P", "B")


def test_the_fallback_pull_step_is_the_one_the_workers_run() -> None:
    from scheduler.pull_steps import PULL_STEP as SCHEDULER_PULL_STEP
    from scheduler.pull_steps import set_code_directory

    assert PULL_STEP == SCHEDULER_PULL_STEP
    assert PULL_STEP == f"{set_code_directory.__module__}.{set_code_directory.__name__}"
