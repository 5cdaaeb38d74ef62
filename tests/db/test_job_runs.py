"""The run mirror upsert and the counters derived from history, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from db.models import ScheduledJob, ScheduledJobRun
from db.queries.job_runs import JobRunEvent, claim_schedule_slot, derive_job_state, upsert_job_run
from db.session import session_scope
from tests.support.factories import make_job, make_product

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


async def _job(db_url, tenant_id, **kw) -> ScheduledJob:
    async with session_scope(db_url) as s:
        product = await make_product(s, tenant_id)
        return await make_job(s, tenant_id, product, **kw)


async def _apply(db_url, event: JobRunEvent) -> ScheduledJobRun:
    async with session_scope(db_url) as s:
        return await upsert_job_run(s, event)


async def _rows(db_url, job_id):
    async with session_scope(db_url) as s:
        return list(
            (
                await s.scalars(
                    sa.select(ScheduledJobRun).where(ScheduledJobRun.scheduled_job_id == job_id)
                )
            ).all()
        )


def _snapshot(row: ScheduledJobRun) -> dict:
    return {
        c: getattr(row, c)
        for c in (
            "status",
            "started_at",
            "completed_at",
            "error_message",
            "ad_run_ids",
            "templates_used",
            "trigger",
            "scheduled_for",
        )
    }


async def test_upsert_is_idempotent(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    event = JobRunEvent(
        flow_run_id=uuid.uuid4(),
        scheduled_job_id=job.id,
        tenant_id=tenant_id,
        status="completed",
        started_at=T0,
        completed_at=T0 + timedelta(minutes=1),
        scheduled_for=T0,
        ad_run_ids=[uuid.uuid4()],
        templates_used=["a.png"],
    )
    first = _snapshot(await _apply(db_url, event))
    second = _snapshot(await _apply(db_url, event))
    rows = await _rows(db_url, job.id)
    assert len(rows) == 1
    assert first == second == _snapshot(rows[0])
    assert rows[0].ad_run_ids == event.ad_run_ids and rows[0].scheduled_for == T0


async def test_late_running_never_overwrites_a_terminal_status(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    fr = uuid.uuid4()
    await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=fr,
            scheduled_job_id=job.id,
            status="failed",
            error_message="boom",
            completed_at=T0,
        ),
    )
    row = await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=fr,
            scheduled_job_id=job.id,
            status="running",
            started_at=T0 - timedelta(seconds=5),
            error_message="ignored",
        ),
    )
    assert row.status == "failed"
    assert row.error_message == "boom"
    assert row.started_at == T0 - timedelta(seconds=5)  # gaps are filled, values are kept
    # A second terminal report does not flip the first one either.
    row = await _apply(
        db_url, JobRunEvent(flow_run_id=fr, scheduled_job_id=job.id, status="completed")
    )
    assert row.status == "failed"


async def test_running_then_completed_advances(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    fr = uuid.uuid4()
    await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=fr,
            scheduled_job_id=job.id,
            status="running",
            started_at=T0,
            trigger="manual",
        ),
    )
    row = await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=fr,
            scheduled_job_id=job.id,
            status="completed",
            completed_at=T0 + timedelta(1),
        ),
    )
    assert (row.status, row.trigger, row.started_at) == ("completed", "manual", T0)


async def test_schedule_slot_is_owned_by_one_run(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    owners = []
    for _ in range(2):
        async with session_scope(db_url) as s:
            row = await upsert_job_run(
                s,
                JobRunEvent(
                    flow_run_id=uuid.uuid4(),
                    scheduled_job_id=job.id,
                    status="running",
                    scheduled_for=T0,
                ),
            )
            owners.append(await claim_schedule_slot(s, row))
    assert owners == [True, False]


async def _history(db_url, job, statuses, trigger="schedule"):
    for i, status in enumerate(statuses):
        await _apply(
            db_url,
            JobRunEvent(
                flow_run_id=uuid.uuid4(),
                scheduled_job_id=job.id,
                status=status,
                trigger=trigger,
                scheduled_for=T0 + timedelta(days=i),
                started_at=T0 + timedelta(days=i),
                error_message="provider down" if status == "failed" else None,
            ),
        )


async def test_max_runs_counts_scheduled_completed_runs_only(db_url, tenant_id) -> None:
    job = await _job(
        db_url, tenant_id, max_runs=2, cron_expression="0 9 * * *", timezone="America/New_York"
    )
    await _history(db_url, job, ["completed", "completed"], trigger="manual")
    await _history(db_url, job, ["completed", "skipped"])
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=T0)
    assert (state.runs_completed, state.status, state.status_changed_to) == (1, "active", None)
    assert state.next_run_at == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # 09:00 New York
    await _history(db_url, job, ["completed"])
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=T0)
        again = await derive_job_state(s, job.id, now=T0)
    assert (state.runs_completed, state.status_changed_to, state.deactivate_schedule) == (
        2,
        "completed",
        True,
    )
    assert state.next_run_at is None
    assert (again.status, again.status_changed_to) == ("completed", None)  # idempotent


async def test_consecutive_failures_pause_the_job_with_a_note(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    await _history(db_url, job, ["failed", "completed", "failed", "skipped", "failed"])
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=T0)
    assert (state.consecutive_failures, state.status) == (2, "active")
    await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=uuid.uuid4(),
            scheduled_job_id=job.id,
            status="failed",
            scheduled_for=T0 + timedelta(days=9),
            error_message="provider down",
        ),
    )
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=T0)
        stored = await s.get(ScheduledJob, job.id)
    assert (state.consecutive_failures, state.status_changed_to) == (3, "paused")
    assert stored is not None and stored.status == "paused"
    assert "3 consecutive failed runs" in (stored.pause_note or "")
    assert "provider down" in (stored.pause_note or "")


async def test_one_time_job_completes_after_its_run(db_url, tenant_id) -> None:
    job = await _job(
        db_url, tenant_id, schedule_type="one_time", cron_expression=None, scheduled_at=T0
    )
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=T0 - timedelta(hours=1))
    assert state.next_run_at == T0
    await _history(db_url, job, ["failed"])
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=T0)
    assert (state.status, state.next_run_at) == ("completed", None)


async def test_next_run_crosses_dst_in_the_job_time_zone(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id, cron_expression="30 2 * * *", timezone="America/New_York")
    # 2026-03-08 02:30 does not exist in New York (clocks jump 02:00 -> 03:00): the run moves
    # forward by the gap to 03:30 EDT, as Prefect's scheduler fires it.
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id, now=datetime(2026, 3, 8, 5, 0, tzinfo=UTC))
    assert state.next_run_at is not None
    assert state.next_run_at.astimezone(UTC) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    job2 = await _job(db_url, tenant_id, cron_expression="30 1 * * *", timezone="America/New_York")
    # 2026-11-01 01:30 happens twice (fall back); the job fires once, at the first one.
    async with session_scope(db_url) as s:
        first = await derive_job_state(s, job2.id, now=datetime(2026, 11, 1, 4, 0, tzinfo=UTC))
        after = await derive_job_state(s, job2.id, now=first.next_run_at)
    assert first.next_run_at == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert after.next_run_at == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


async def test_a_cron_prefect_rejects_is_reported_not_raised(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id, cron_expression="0 9 * * *", timezone="Mars/Olympus")
    async with session_scope(db_url) as s:
        state = await derive_job_state(s, job.id)
    assert state.next_run_at is None and state.status == "active"
    assert state.schedule_problem is not None
    assert "'Mars/Olympus'" in state.schedule_problem
    assert "unknown time zone 'Mars/Olympus'" in state.schedule_problem
