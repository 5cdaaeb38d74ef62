"""The run mirror upsert and the counters derived from history, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from db.models import ScheduledJob, ScheduledJobRun
from db.queries.job_runs import (
    JobRunEvent,
    claim_schedule_slot,
    derive_job_state,
    record_run_summary,
    start_job_run,
    upsert_job_run,
)
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


def _start(job: ScheduledJob, flow_run_id: uuid.UUID, **kw) -> JobRunEvent:
    fields = {"trigger": "schedule", "scheduled_for": T0, "started_at": T0, **kw}
    return JobRunEvent(
        flow_run_id=flow_run_id,
        scheduled_job_id=job.id,
        tenant_id=job.tenant_id,
        status="running",
        **fields,
    )


async def _start_run(db_url, event: JobRunEvent) -> tuple[ScheduledJobRun, bool]:
    async with session_scope(db_url) as s:
        return await start_job_run(s, event)


async def test_a_run_starts_with_its_slot_and_a_second_run_of_the_slot_does_not(
    db_url, tenant_id
) -> None:
    job = await _job(db_url, tenant_id)
    first, second = uuid.uuid4(), uuid.uuid4()
    row, owns = await _start_run(db_url, _start(job, first, flow_run_name="a"))
    assert owns and row.slot_key == f"{job.id}:{T0.isoformat()}" and row.flow_run_name == "a"
    # The same flow run again (a retried start) still owns it; another flow run does not.
    assert (await _start_run(db_url, _start(job, first)))[1] is True
    other, owns_other = await _start_run(db_url, _start(job, second))
    assert not owns_other and other.slot_key is None and other.flow_run_id == second
    rows = {r.flow_run_id: r for r in await _rows(db_url, job.id)}
    assert set(rows) == {first, second}
    assert rows[first].slot_key == row.slot_key and rows[second].slot_key is None


async def test_a_run_whose_row_a_hook_made_first_still_claims_its_slot(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    flow_run_id = uuid.uuid4()
    # The Running hook got there first: a row without a slot, named as the run started.
    await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=flow_run_id, scheduled_job_id=job.id, status="running", flow_run_name="x"
        ),
    )
    row, owns = await _start_run(db_url, _start(job, flow_run_id, flow_run_name="y"))
    assert owns and row.slot_key == f"{job.id}:{T0.isoformat()}"
    assert (row.flow_run_name, row.scheduled_for) == ("x", T0)
    assert len(await _rows(db_url, job.id)) == 1


async def test_a_manual_run_claims_no_slot(db_url, tenant_id) -> None:
    job = await _job(db_url, tenant_id)
    row, owns = await _start_run(db_url, _start(job, uuid.uuid4(), trigger="manual"))
    assert owns and row.slot_key is None and row.trigger == "manual"


async def test_a_run_summary_updates_its_running_row_and_only_fills_a_finished_one(
    db_url, tenant_id
) -> None:
    job = await _job(db_url, tenant_id)
    running, finished = uuid.uuid4(), uuid.uuid4()
    rows = {}
    for flow_run_id in (running, finished):
        rows[flow_run_id] = (await _start_run(db_url, _start(job, flow_run_id)))[0].id
    # The reconciler failed one of them first (its process went silent).
    await _apply(
        db_url,
        JobRunEvent(
            flow_run_id=finished,
            scheduled_job_id=job.id,
            status="failed",
            error_message="the flow-run process stopped",
        ),
    )
    ad_run = uuid.uuid4()
    for flow_run_id in (running, finished):
        async with session_scope(db_url) as s:
            await record_run_summary(
                s,
                rows[flow_run_id],
                JobRunEvent(
                    flow_run_id=flow_run_id,
                    scheduled_job_id=job.id,
                    status="running",
                    ad_run_ids=[ad_run],
                    templates_used=["a.png"],
                    logs="1 ads from 1/1 templates",
                    error_message="summary error",
                ),
            )
    after = {r.flow_run_id: r for r in await _rows(db_url, job.id)}
    assert _snapshot(after[running]) | {"logs": after[running].logs} == {
        **_snapshot(after[running]),
        "status": "running",
        "ad_run_ids": [ad_run],
        "templates_used": ["a.png"],
        "error_message": "summary error",
        "logs": "1 ads from 1/1 templates",
    }
    # A finished row keeps its status and error; its empty fields are filled.
    assert after[finished].status == "failed"
    assert after[finished].error_message == "the flow-run process stopped"
    assert after[finished].ad_run_ids == [ad_run] and after[finished].templates_used == ["a.png"]


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


async def test_a_run_start_and_summary_look_no_type_up_on_a_new_connection(
    pg_database_url, tenant_id, monkeypatch
) -> None:
    """`ad_run_ids` travels as TEXT[]: asyncpg looks `UUID[]` up on every new connection (three
    catalog queries, 12-20 ms), and a flow run's connections are all new. Stored as UUID[]."""
    import asyncpg

    from db.session import dispose_engines

    job = await _job(pg_database_url, tenant_id)
    looked_up: list[object] = []
    introspect = asyncpg.connection.Connection._introspect_types

    async def spy(self, *args, **kwargs):
        looked_up.append(args[0])
        return await introspect(self, *args, **kwargs)

    await dispose_engines()  # the run's first connection, as in a fresh flow-run process
    monkeypatch.setattr(asyncpg.connection.Connection, "_introspect_types", spy)
    flow_run_id, ad_runs = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
    row, _ = await _start_run(pg_database_url, _start(job, flow_run_id))
    async with session_scope(pg_database_url) as s:
        await record_run_summary(
            s,
            row.id,
            JobRunEvent(
                flow_run_id=flow_run_id,
                scheduled_job_id=job.id,
                status="running",
                ad_run_ids=ad_runs,
                templates_used=["a.png"],
            ),
        )
    (stored,) = await _rows(pg_database_url, job.id)
    assert stored.ad_run_ids == ad_runs
    assert looked_up == []
    async with session_scope(pg_database_url) as s:
        kind = await s.scalar(
            sa.text("SELECT pg_typeof(ad_run_ids)::text FROM scheduled_job_runs WHERE id = :id"),
            {"id": row.id},
        )
    assert kind == "uuid[]"
