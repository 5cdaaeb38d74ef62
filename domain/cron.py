"""The one cron module: is a schedule one Prefect will run, and when does it fire next.

A recurring job is valid exactly when Prefect can schedule it *and* it fires at least once.
Both questions are answered here with **Prefect's own scheduling code**: the server-side
`prefect.server.schemas.schedules.CronSchedule` (its cron parser is the `croniter` Prefect
vendors, its time-zone rules are `zoneinfo.available_timezones()`, its DST policy is the
`whenever` engine). That is the code Prefect's scheduler service runs to create a deployment's
flow runs, so a time computed here is the time Prefect runs. A second implementation (the PyPI
`croniter`, or `zoneinfo` alone) disagrees with it on real inputs — it accepts crons that never
fire (`0 0 31 2 *`) and zone names Prefect refuses (`posixrules`, `right/UTC`) — which is why
this is the only module that knows about cron. Decision: `domain` is otherwise pydantic + stdlib,
but reusing Prefect here is the only way to use the *same* code, so this module imports it (lazily
cached; Prefect is pinned at 3.9.1 and the unit tests pin its answers).

Errors are `ScheduleError` (a `ValueError`, so pydantic validators can raise it) naming the
field (`schedule.cron` or `schedule.timezone`) and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

#: Cron macros Prefect accepts (its croniter expands them to five fields).
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_FIELD = "schedule.cron"
TIMEZONE_FIELD = "schedule.timezone"
CRON_ALLOWED = (
    "a five-field cron expression 'minute hour day-of-month month day-of-week' that fires at "
    f"least once (e.g. '0 9 * * 1') or one of {', '.join(CRON_MACROS)}"
)
TIMEZONE_ALLOWED = "an IANA time zone name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"
#: Zone names Prefect accepts whose meaning depends on the machine (server, worker and CLI may
#: disagree): refused so a job means the same time everywhere.
MACHINE_DEPENDENT_ZONES = frozenset({"localtime"})


class ScheduleError(ValueError):
    """A cron or time zone Prefect would not schedule (or that never fires).

    Attributes:
        field: `schedule.cron` or `schedule.timezone`.
        message: What is wrong and what is allowed (never more than the value itself).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@lru_cache(maxsize=1)
def _prefect_cron() -> Any:
    # The server schema (not the client one): it is the class whose date generator the
    # scheduler service uses. Imported lazily: `import prefect.server` costs ~1 s.
    from prefect.server.schemas.schedules import CronSchedule

    return CronSchedule


def normalize_cron(expr: str) -> str:
    """The cron with runs of whitespace collapsed (how it is stored and shown)."""
    return " ".join(str(expr).split())


def _schedule(cron: str, timezone: str) -> Any:
    """Prefect's CronSchedule for the pair; raises `ScheduleError` for what it refuses."""
    from pydantic import ValidationError

    expr = normalize_cron(cron)
    if not expr:
        raise ScheduleError(CRON_FIELD, f"empty; allowed: {CRON_ALLOWED}")
    if expr.startswith("@"):
        if expr not in CRON_MACROS:
            raise ScheduleError(CRON_FIELD, f"unknown cron macro {expr!r}; allowed: {CRON_ALLOWED}")
    elif len(expr.split(" ")) != 5:
        raise ScheduleError(
            CRON_FIELD,
            f"{expr!r} has {len(expr.split(' '))} fields; allowed: {CRON_ALLOWED}",
        )
    tz = str(timezone).strip()
    if not tz or tz in MACHINE_DEPENDENT_ZONES:
        raise ScheduleError(TIMEZONE_FIELD, f"{tz!r} is not allowed; allowed: {TIMEZONE_ALLOWED}")
    cls = _prefect_cron()
    try:
        return cls(cron=expr, timezone=tz)
    except ValidationError as exc:
        fields = {str(err["loc"][0]) if err["loc"] else "" for err in exc.errors()}
        if "cron" in fields:
            raise ScheduleError(
                CRON_FIELD, f"invalid cron expression {expr!r}; allowed: {CRON_ALLOWED}"
            ) from exc
        raise ScheduleError(
            TIMEZONE_FIELD, f"unknown time zone {tz!r}; allowed: {TIMEZONE_ALLOWED}"
        ) from exc


def _dates(schedule: Any, start: datetime, n: int) -> Iterator[datetime]:
    from prefect._vendor.croniter import CroniterBadDateError

    try:
        # Prefect's public `get_dates` is a coroutine wrapping exactly this generator.
        for date in schedule._get_dates_generator(n=n, start=start):
            # Prefect hands back pendulum datetimes; the project speaks stdlib aware UTC.
            yield datetime.fromtimestamp(date.timestamp(), tz=UTC)
    except CroniterBadDateError as exc:
        raise ScheduleError(
            CRON_FIELD,
            f"{schedule.cron!r} never fires (no such date); allowed: {CRON_ALLOWED}",
        ) from exc


def validate_schedule(cron: str, timezone: str) -> str:
    """Check that Prefect schedules `cron` in `timezone` and that it fires at least once.

    Returns:
        The normalized cron expression.

    Raises:
        ScheduleError: naming `schedule.cron` or `schedule.timezone` and what is allowed.
    """
    schedule = _schedule(cron, timezone)
    if not list(_dates(schedule, datetime.now(UTC), 1)):
        raise ScheduleError(CRON_FIELD, f"{schedule.cron!r} never fires; allowed: {CRON_ALLOWED}")
    return str(schedule.cron)


def validate_timezone(timezone: str) -> str:
    """Check a time zone name the way Prefect does (plus: not machine-dependent); returns it.

    Raises:
        ScheduleError: naming `schedule.timezone`.
    """
    _schedule("@daily", timezone)
    return str(timezone).strip()


def next_fire_times(
    cron: str, timezone: str, *, after: datetime | None = None, count: int = 1
) -> list[datetime]:
    """The next `count` times `cron` fires in `timezone`, strictly after `after` (default now).

    Exactly the times Prefect's scheduler creates flow runs for (DST gaps and folds included).

    Returns:
        Aware UTC datetimes, ascending (fewer than `count` only for crons that stop firing).

    Raises:
        ScheduleError: the pair is not one Prefect schedules, or never fires.
    """
    schedule = _schedule(cron, timezone)
    moment = (after or datetime.now(UTC)).astimezone(UTC)
    # Prefect's `start` is inclusive: step past `after` by the smallest unit it resolves.
    start = moment + timedelta(microseconds=1)
    return list(_dates(schedule, start, count))


def next_fire_time(cron: str, timezone: str, *, after: datetime | None = None) -> datetime:
    """The next time `cron` fires in `timezone` strictly after `after` (default now), UTC.

    Raises:
        ScheduleError: the pair is not one Prefect schedules, or never fires.
    """
    times = next_fire_times(cron, timezone, after=after, count=1)
    if not times:
        raise ScheduleError(CRON_FIELD, f"{cron!r} never fires; allowed: {CRON_ALLOWED}")
    return times[0]
