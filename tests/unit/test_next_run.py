"""`next_run_for`: what the SDK stores as the job's next run, for every status, across DST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db.models import ScheduledJob
from scheduler.sdk import next_run_for


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _job(status: str = "active", **kw: object) -> ScheduledJob:
    values: dict[str, object] = {
        "schedule_type": "recurring",
        "cron_expression": "30 2 * * *",
        "timezone": "UTC",
    }
    values.update(kw)
    return ScheduledJob(status=status, **values)


@pytest.mark.parametrize(
    ("cron", "zone", "now", "expected"),
    [
        # The day a wall time does not exist (spring forward), in three zones.
        ("30 2 * * *", "America/New_York", _utc(2026, 3, 8, 6), _utc(2026, 3, 8, 7, 30)),
        ("30 2 * * *", "Europe/Berlin", _utc(2026, 3, 29, 0), _utc(2026, 3, 29, 1, 30)),
        ("30 2 * * *", "Australia/Sydney", _utc(2026, 10, 3, 15), _utc(2026, 10, 3, 16, 30)),
        # The day a wall time happens twice (fall back): its first occurrence, once.
        ("30 1 * * *", "America/New_York", _utc(2026, 11, 1, 4), _utc(2026, 11, 1, 5, 30)),
        ("30 1 * * *", "America/New_York", _utc(2026, 11, 1, 5, 30), _utc(2026, 11, 2, 6, 30)),
        ("30 2 * * *", "Europe/Berlin", _utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)),
        ("0 9 * * 1", "Europe/Berlin", _utc(2026, 10, 26, 7), _utc(2026, 10, 26, 8)),  # CET again
    ],
)
def test_active_recurring_job_across_dst(
    cron: str, zone: str, now: datetime, expected: datetime
) -> None:
    assert next_run_for(_job(cron_expression=cron, timezone=zone), now=now) == expected


@pytest.mark.parametrize("status", ["paused", "completed"])
def test_no_next_run_unless_active(status: str) -> None:
    assert next_run_for(_job(status), now=_utc(2026, 11, 29)) is None


def test_deleted_job_has_no_next_run() -> None:
    job = _job(deleted_at=_utc(2026, 11, 1))
    assert next_run_for(job, now=_utc(2026, 11, 29)) is None


def test_one_time_job_runs_at_its_time() -> None:
    at = _utc(2030, 1, 1, 9)
    job = _job(schedule_type="one_time", cron_expression=None, scheduled_at=at)
    assert next_run_for(job, now=_utc(2026, 11, 29)) == at


def test_a_stored_schedule_prefect_would_not_run_has_no_next_run() -> None:
    assert next_run_for(_job(cron_expression="0 0 31 2 *"), now=_utc(2026, 11, 29)) is None
