"""What a person does to a job's deployment in the Prefect UI reaches `scheduled_jobs` within
seconds, with a note, and the SDK never undoes it. Each test makes the HTTP calls the Prefect UI
makes (read from its bundled code) on a real Prefect server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client

from db.errors import NotFoundError
from flows import deployment_sync as dep
from flows.ui_sync import JOB_SCHEDULE_SLUG, sync_ui_changes
from scheduler.sdk import AdScheduler
from tests.scheduler.conftest import Catalog, recurring_spec
from tests.uisync.conftest import Watcher, eventually, job_row, run_row

QUICK_RUN = {"state": {"type": "SCHEDULED", "message": "Run from the Prefect UI with defaults"}}


def test_the_job_schedule_slug_is_the_sdks() -> None:
    assert JOB_SCHEDULE_SLUG == dep.SCHEDULE_SLUG


async def _schedule_id(deployment_id: uuid.UUID) -> uuid.UUID:
    async with get_client() as client:
        [schedule] = await client.read_deployment_schedules(deployment_id)
    return schedule.id


async def test_pause_toggle_and_resume_in_the_ui(
    ads: AdScheduler, catalog: Catalog, ui, watcher: Watcher
) -> None:
    spec = recurring_spec(catalog)
    job = await ads.create(spec)
    dep_id = job.prefect_deployment_id
    assert dep_id is not None and job.next_run_at is not None

    # The UI's deployment toggle: PATCH /deployments/{id} {"paused": true}.
    (await ui.patch(f"/deployments/{dep_id}", json={"paused": True})).raise_for_status()
    row, _ = await eventually(
        lambda: job_row(catalog.db_url, job.id), lambda j: j.status == "paused", "UI pause"
    )
    assert row.pause_note and row.pause_note.startswith("Paused in the Prefect UI")
    assert row.next_run_at is None

    # Re-applying the same spec keeps the pause (a paused job stays paused).
    again = await ads.apply(spec)
    assert again.status == "paused"
    async with get_client() as client:
        assert (await client.read_deployment(dep_id)).paused is True

    # The UI's resume: PATCH {"paused": false}.
    (await ui.patch(f"/deployments/{dep_id}", json={"paused": False})).raise_for_status()
    row, _ = await eventually(
        lambda: job_row(catalog.db_url, job.id), lambda j: j.status == "active", "UI resume"
    )
    assert row.pause_note and row.pause_note.startswith("Resumed in the Prefect UI")
    assert row.next_run_at is not None and row.next_run_at > datetime.now(UTC)

    # The older endpoints (`pause_deployment`, used by the CLI and older UIs) are seen too.
    (await ui.post(f"/deployments/{dep_id}/pause_deployment")).raise_for_status()
    await eventually(
        lambda: job_row(catalog.db_url, job.id), lambda j: j.status == "paused", "API pause"
    )


async def test_schedule_toggle_and_cron_edit_in_the_ui(
    ads: AdScheduler, catalog: Catalog, ui, watcher: Watcher
) -> None:
    job = await ads.create(recurring_spec(catalog))
    dep_id = job.prefect_deployment_id
    assert dep_id is not None
    schedule_id = await _schedule_id(dep_id)
    path = f"/deployments/{dep_id}/schedules/{schedule_id}"

    (await ui.patch(path, json={"active": False})).raise_for_status()
    row, _ = await eventually(
        lambda: job_row(catalog.db_url, job.id), lambda j: j.status == "paused", "toggle off"
    )
    assert row.pause_note and "schedule was switched off in the Prefect UI" in row.pause_note
    (await ui.patch(path, json={"active": True})).raise_for_status()
    await eventually(
        lambda: job_row(catalog.db_url, job.id), lambda j: j.status == "active", "toggle on"
    )

    # The schedule editor: a new cron in a new time zone.
    edit = {"schedule": {"cron": "30 7 * * *", "timezone": "Europe/Berlin", "day_or": True}}
    (await ui.patch(path, json=edit)).raise_for_status()
    row, _ = await eventually(
        lambda: job_row(catalog.db_url, job.id),
        lambda j: j.cron_expression == "30 7 * * *",
        "cron edit",
    )
    assert row.timezone == "Europe/Berlin" and row.status == "active"
    assert row.pause_note and "Schedule changed in the Prefect UI" in row.pause_note
    assert "0 9 * * 1" in row.pause_note  # says what it was
    assert row.next_run_at is not None
    assert row.next_run_at.astimezone(UTC).minute == 30

    # The SDK's own writes keep the UI's schedule (nothing converges it back).
    await ads.pause(job.id, note="holiday")
    resumed = await ads.resume(job.id)
    assert (resumed.cron_expression, resumed.timezone) == ("30 7 * * *", "Europe/Berlin")
    async with get_client() as client:
        [schedule] = await client.read_deployment_schedules(dep_id)
    assert schedule.schedule.cron == "30 7 * * *" and schedule.active


async def test_a_schedule_the_job_cannot_run_pauses_it_and_says_why(
    ads: AdScheduler, catalog: Catalog, ui
) -> None:
    job = await ads.create(recurring_spec(catalog))
    dep_id = job.prefect_deployment_id
    assert dep_id is not None
    schedule_id = await _schedule_id(dep_id)
    # Prefect accepts a cron that never fires; ad-scheduler does not.
    edit = {"schedule": {"cron": "0 0 31 2 *", "timezone": "UTC"}}
    (await ui.patch(f"/deployments/{dep_id}/schedules/{schedule_id}", json=edit)).raise_for_status()

    report = await sync_ui_changes(database_url=catalog.db_url, job_ids=[job.id])
    assert any("never fires" in p for p in report.problems), report
    row = await job_row(catalog.db_url, job.id)
    assert row.status == "paused" and row.cron_expression == "0 9 * * 1"
    assert row.pause_note and "never fires" in row.pause_note
    async with get_client() as client:
        assert (await client.read_deployment(dep_id)).paused is True
    # A second pass finds nothing new to do.
    second = await sync_ui_changes(database_url=catalog.db_url, job_ids=[job.id])
    assert second.jobs_changed == 0


async def test_delete_in_the_ui_deletes_the_job_and_keeps_its_history(
    ads: AdScheduler, catalog: Catalog, ui, watcher: Watcher
) -> None:
    job = await ads.create(recurring_spec(catalog))
    (await ui.delete(f"/deployments/{job.prefect_deployment_id}")).raise_for_status()
    row, _ = await eventually(
        lambda: job_row(catalog.db_url, job.id), lambda j: j.deleted_at is not None, "UI delete"
    )
    assert row.pause_note and row.pause_note.startswith("Deleted in the Prefect UI")
    assert row.next_run_at is None
    with pytest.raises(NotFoundError):
        await ads.get(job.id)
    assert (await ads.history_job(job.id)).id == job.id


async def test_quick_and_custom_runs_from_the_ui_are_recorded_at_once(
    ads: AdScheduler, catalog: Catalog, ui, watcher: Watcher
) -> None:
    job = await ads.create(recurring_spec(catalog))
    dep_id = job.prefect_deployment_id

    quick = (await ui.post(f"/deployments/{dep_id}/create_flow_run", json=QUICK_RUN)).json()
    later = datetime.now(UTC) + timedelta(hours=2)
    custom = (
        await ui.post(
            f"/deployments/{dep_id}/create_flow_run",
            json={
                "parameters": {"job_id": str(job.id)},
                "state": {
                    "type": "SCHEDULED",
                    "message": "Run from the Prefect UI",
                    "state_details": {"scheduled_time": later.isoformat()},
                },
            },
        )
    ).json()
    sdk_run = await ads.run_now(job.id)

    row, _ = await eventually(
        lambda: run_row(catalog.db_url, uuid.UUID(quick["id"])), lambda r: r is not None, "quick"
    )
    assert row is not None and row.status == "pending" and row.trigger == "manual"
    assert row.scheduled_job_id == job.id and row.tenant_id == catalog.tenant_id
    assert row.logs == "Started in the Prefect UI."
    custom_row, _ = await eventually(
        lambda: run_row(catalog.db_url, uuid.UUID(custom["id"])), lambda r: r is not None, "custom"
    )
    assert custom_row is not None and custom_row.logs is not None
    assert custom_row.logs.startswith("Started in the Prefect UI (custom run, scheduled for")
    # The SDK's own manual run is not the UI's (its row comes from the run's hooks).
    assert await run_row(catalog.db_url, sdk_run) is None


async def test_the_sdk_keeps_a_ui_pause_it_has_not_seen_yet(
    ads: AdScheduler, catalog: Catalog, ui
) -> None:
    """No watcher running: the SDK itself reads the deployment before it writes."""
    spec = recurring_spec(catalog)
    job = await ads.create(spec)
    dep_id = job.prefect_deployment_id
    (await ui.patch(f"/deployments/{dep_id}", json={"paused": True})).raise_for_status()

    updated = await ads.apply({**spec, "max_runs": 9})
    assert updated.status == "paused" and updated.max_runs == 9
    assert updated.pause_note and updated.pause_note.startswith("Paused in the Prefect UI")
    async with get_client() as client:
        assert (await client.read_deployment(dep_id)).paused is True


async def test_a_completed_job_resumed_in_the_ui_is_stopped_again_and_said(
    ads: AdScheduler, catalog: Catalog, ui
) -> None:
    from sqlalchemy import update

    from db.models import ScheduledJob
    from db.session import session_scope

    job = await ads.create(recurring_spec(catalog, max_runs=1))
    async with session_scope(catalog.db_url) as session:
        await session.execute(
            update(ScheduledJob).where(ScheduledJob.id == job.id).values(status="completed")
        )
    await ads.resync(job.id)  # the deployment of a completed job: paused, schedule off
    dep_id = job.prefect_deployment_id
    assert dep_id is not None
    schedule_id = await _schedule_id(dep_id)
    (await ui.patch(f"/deployments/{dep_id}", json={"paused": False})).raise_for_status()
    (
        await ui.patch(f"/deployments/{dep_id}/schedules/{schedule_id}", json={"active": True})
    ).raise_for_status()

    report = await sync_ui_changes(database_url=catalog.db_url, job_ids=[job.id])
    assert any("is completed" in p and "raise max_runs" in p for p in report.problems), report
    assert (await job_row(catalog.db_url, job.id)).status == "completed"
    async with get_client() as client:
        deployment = await client.read_deployment(dep_id)
        [schedule] = await client.read_deployment_schedules(dep_id)
    assert deployment.paused is True and schedule.active is False


async def test_a_deployment_missing_without_a_delete_does_not_delete_the_job(
    ads: AdScheduler, catalog: Catalog
) -> None:
    """A new or reset Prefect server does not know the job: that is no person's delete."""
    from sqlalchemy import update

    from db.models import ScheduledJob
    from db.session import session_scope

    job = await ads.create(recurring_spec(catalog))
    unknown = uuid.uuid4()
    async with session_scope(catalog.db_url) as session:
        await session.execute(
            update(ScheduledJob)
            .where(ScheduledJob.id == job.id)
            .values(prefect_deployment_id=unknown)
        )
    report = await sync_ui_changes(database_url=catalog.db_url, job_ids=[job.id])
    assert any("not on this Prefect server" in p and "resync" in p for p in report.problems)
    row = await job_row(catalog.db_url, job.id)
    assert row.deleted_at is None and row.status == "active"
    # Leave no job pointing at an unknown deployment in the shared test database.
    async with session_scope(catalog.db_url) as session:
        await session.execute(
            update(ScheduledJob).where(ScheduledJob.id == job.id).values(deleted_at=row.updated_at)
        )


async def test_an_sdk_write_that_replaces_a_ui_edit_says_so(
    ads: AdScheduler, catalog: Catalog, ui, caplog: pytest.LogCaptureFixture
) -> None:
    """No watcher: `update` read the row before the UI edit reached it, so its spec carries the
    old cron; the write goes through (the person asked for it) and says what it replaced."""
    job = await ads.create(recurring_spec(catalog))
    dep_id = job.prefect_deployment_id
    assert dep_id is not None
    spec = (await ads.spec_of(job.id)).model_dump(mode="json")
    schedule_id = await _schedule_id(dep_id)
    edit = {"schedule": {"cron": "45 6 * * *", "timezone": "UTC"}}
    (await ui.patch(f"/deployments/{dep_id}/schedules/{schedule_id}", json=edit)).raise_for_status()

    with caplog.at_level("WARNING", logger="ad_scheduler.ui_sync"):
        await ads.apply({**spec, "max_runs": 3})
    said = [r.getMessage() for r in caplog.records if r.name == "ad_scheduler.ui_sync"]
    assert any(
        "cron_expression was changed in the Prefect UI to '45 6 * * *'" in m
        and "this write sets it to '0 9 * * 1'" in m
        for m in said
    ), said
