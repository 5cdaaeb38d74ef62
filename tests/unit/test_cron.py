"""The one cron module: Prefect's own answers, pinned (no services)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.cron import (
    CRON_FIELD,
    TIMEZONE_FIELD,
    ScheduleError,
    next_fire_time,
    next_fire_times,
    validate_schedule,
)


@pytest.mark.parametrize(
    ("cron", "timezone", "field", "says"),
    [
        ("0 0 31 2 *", "UTC", CRON_FIELD, "never fires"),  # February 31st
        ("0 0 30 2 *", "UTC", CRON_FIELD, "never fires"),
        ("0 0 31 4 *", "Europe/Berlin", CRON_FIELD, "never fires"),  # April has 30 days
        ("0 0 31 2 1", "UTC", CRON_FIELD, "never fires"),  # Prefect's croniter: day AND weekday
        ("99 9 * * *", "UTC", CRON_FIELD, "invalid cron expression"),
        ("*/0 * * * *", "UTC", CRON_FIELD, "invalid cron expression"),
        ("H 9 * * *", "UTC", CRON_FIELD, "invalid cron expression"),  # hashed: Prefect refuses
        ("0 9 * * 1 2030", "UTC", CRON_FIELD, "has 6 fields"),
        ("0 0 1 1 * *", "UTC", CRON_FIELD, "has 6 fields"),  # seconds field
        ("@reboot", "UTC", CRON_FIELD, "unknown cron macro"),
        ("", "UTC", CRON_FIELD, "empty"),
        ("0 9 * * 1", "posixrules", TIMEZONE_FIELD, "unknown time zone"),  # zoneinfo loads it
        ("0 9 * * 1", "right/UTC", TIMEZONE_FIELD, "unknown time zone"),  # zoneinfo loads it
        ("0 9 * * 1", "posix/Europe/Berlin", TIMEZONE_FIELD, "unknown time zone"),
        ("0 9 * * 1", "utc", TIMEZONE_FIELD, "unknown time zone"),
        ("0 9 * * 1", "Mars/Olympus", TIMEZONE_FIELD, "unknown time zone"),
        ("0 9 * * 1", "localtime", TIMEZONE_FIELD, "not allowed"),  # machine-dependent
        ("0 9 * * 1", "", TIMEZONE_FIELD, "not allowed"),
    ],
)
def test_refused_schedules_name_the_field_and_what_is_allowed(
    cron: str, timezone: str, field: str, says: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        validate_schedule(cron, timezone)
    assert caught.value.field == field
    assert says in caught.value.message and "allowed:" in caught.value.message


@pytest.mark.parametrize(
    ("cron", "timezone", "normalized"),
    [
        ("0 9 * * 1", "America/New_York", "0 9 * * 1"),
        ("  0   9 * *  1 ", "UTC", "0 9 * * 1"),
        ("0 0 29 2 *", "UTC", "0 0 29 2 *"),  # leap days only: still fires
        ("0 0 L * *", "Asia/Tokyo", "0 0 L * *"),
        ("0 0 * * 5#3", "UTC", "0 0 * * 5#3"),
        ("@daily", "Europe/Kyiv", "@daily"),
        ("0 9 * * 1", "Europe/Kiev", "0 9 * * 1"),  # a backward-compatible alias
        ("0 9 * * 1", "Etc/GMT+5", "0 9 * * 1"),
    ],
)
def test_accepted_schedules(cron: str, timezone: str, normalized: str) -> None:
    assert validate_schedule(cron, timezone) == normalized


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "timezone", "after", "expected"),
    [
        # New York, spring forward 2026-03-08 02:00 -> 03:00: 02:30 does not exist that day.
        (
            "30 2 * * *",
            "America/New_York",
            _utc(2026, 3, 7, 12),
            [_utc(2026, 3, 8, 7, 30), _utc(2026, 3, 9, 6, 30), _utc(2026, 3, 10, 6, 30)],
        ),
        # New York, fall back 2026-11-01 02:00 -> 01:00: 01:30 happens twice, runs once.
        (
            "30 1 * * *",
            "America/New_York",
            _utc(2026, 10, 31, 12),
            [_utc(2026, 11, 1, 5, 30), _utc(2026, 11, 2, 6, 30), _utc(2026, 11, 3, 6, 30)],
        ),
        # Berlin, spring forward 2026-03-29 02:00 -> 03:00.
        (
            "30 2 * * *",
            "Europe/Berlin",
            _utc(2026, 3, 28, 12),
            [_utc(2026, 3, 29, 1, 30), _utc(2026, 3, 30, 0, 30), _utc(2026, 3, 31, 0, 30)],
        ),
        # Berlin, fall back 2026-10-25 03:00 -> 02:00: 02:30 once, at its first occurrence.
        (
            "30 2 * * *",
            "Europe/Berlin",
            _utc(2026, 10, 24, 12),
            [_utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30), _utc(2026, 10, 27, 1, 30)],
        ),
        # Sydney (southern hemisphere), spring forward 2026-10-04 02:00 -> 03:00.
        (
            "0 9 * * *",
            "Australia/Sydney",
            _utc(2026, 10, 2, 0),
            [_utc(2026, 10, 2, 23, 0), _utc(2026, 10, 3, 22, 0), _utc(2026, 10, 4, 22, 0)],
        ),
        # Hourly across the New York fall-back: Prefect skips the repeated 01:00 hour.
        (
            "0 * * * *",
            "America/New_York",
            _utc(2026, 11, 1, 4, 30),
            [_utc(2026, 11, 1, 5, 0), _utc(2026, 11, 1, 7, 0), _utc(2026, 11, 1, 8, 0)],
        ),
        ("0 9 * * 1", "UTC", _utc(2026, 11, 30, 9), [_utc(2026, 12, 7, 9), _utc(2026, 12, 14, 9)]),
        ("0 0 29 2 *", "UTC", _utc(2026, 11, 29), [_utc(2028, 2, 29)]),
    ],
)
def test_next_fire_times_are_prefects(
    cron: str, timezone: str, after: datetime, expected: list[datetime]
) -> None:
    assert next_fire_times(cron, timezone, after=after, count=len(expected)) == expected


async def test_same_times_as_prefects_scheduler_service() -> None:
    """The dates Prefect's scheduler creates runs for (its async API) equal ours."""
    from prefect.server.schemas.schedules import CronSchedule

    start = _utc(2026, 3, 1, 0, 7)  # between slots: Prefect's start is inclusive, ours is not
    for cron, zone in [("30 2 * * *", "America/New_York"), ("*/45 1-3 * * *", "Europe/Berlin")]:
        theirs = await CronSchedule(cron=cron, timezone=zone).get_dates(n=40, start=start)
        ours = next_fire_times(cron, zone, after=start, count=40)
        assert ours == [datetime.fromtimestamp(d.timestamp(), tz=UTC) for d in theirs]


def test_next_fire_time_is_strictly_after() -> None:
    slot = _utc(2026, 11, 30, 9)
    assert next_fire_time("0 9 * * 1", "UTC", after=slot) == _utc(2026, 12, 7, 9)
    assert next_fire_time("0 9 * * 1", "UTC", after=_utc(2026, 11, 30, 8, 59, 59)) == slot
    with pytest.raises(ScheduleError) as caught:
        next_fire_time("0 0 31 2 *", "UTC")
    assert caught.value.field == CRON_FIELD
