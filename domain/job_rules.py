"""The job-state rules: when a job completes itself, when it pauses itself, and what it says.

Pure functions over a job's run history (the database reads the history and stores the result,
see `db.queries.job_runs.derive_job_state`):

- a job completes at `max_runs` completed *scheduled* runs (manual runs are recorded but do not
  count), or, for a one-time job, once its scheduled run has ended;
- an active job pauses itself after `max_consecutive_failures` failed scheduled runs in a row,
  with a note saying why; skipped and cancelled runs neither count nor break the streak, and
  failures from before the job was last resumed no longer count;
- a completed job stays completed; a paused job is not completed by failures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from domain.vocab import JobStatus, RunStatus

#: The run statuses that make or break a failure streak (skipped/cancelled runs are passed over).
STREAK_STATUSES: Final[tuple[RunStatus, ...]] = ("completed", "failed")
#: At most this many characters of the last error are quoted in a pause note.
PAUSE_NOTE_ERROR_CHARS: Final = 300


@dataclass(frozen=True)
class RunOutcome:
    """One ended scheduled run, as the streak sees it.

    Attributes:
        status: `completed` or `failed` (others are ignored by the streak).
        error_message: The run's error, if any.
        at: When it was due (scheduled time, else start, else creation); None if unknown.
    """

    status: str
    error_message: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class FailureStreak:
    """Failed scheduled runs in a row, newest first.

    Attributes:
        count: How many (0 when the newest counted run completed).
        last_error: The newest non-empty error message among them, or None.
    """

    count: int
    last_error: str | None


def failure_streak(
    newest_first: Iterable[RunOutcome], *, resumed_at: datetime | None = None
) -> FailureStreak:
    """Count the failed runs at the head of `newest_first` (completed/failed runs, newest first).

    The streak stops at the first completed run, and at the first run due at or before
    `resumed_at` (a resume forgives earlier failures).
    """
    count, last_error = 0, None
    for run in newest_first:
        if run.status not in STREAK_STATUSES:
            continue
        if run.status != "failed" or (resumed_at and run.at and run.at <= resumed_at):
            break
        count += 1
        last_error = last_error or run.error_message
    return FailureStreak(count=count, last_error=last_error)


def pause_note(streak: FailureStreak) -> str:
    """What a job that paused itself says (shown by the CLI and the UI), one paragraph."""
    reason = (
        f" (last error: {streak.last_error[:PAUSE_NOTE_ERROR_CHARS]})" if streak.last_error else ""
    )
    return (
        f"Paused automatically after {streak.count} consecutive failed runs{reason}. "
        "Fix the cause, then resume the job."
    )


def automatic_status(
    *,
    status: str,
    max_runs: int | None,
    runs_completed: int,
    one_time: bool,
    scheduled_run_ended: bool,
    streak: FailureStreak,
    max_consecutive_failures: int,
) -> JobStatus | None:
    """The status a job moves to by itself, or None when it stays as it is.

    Args:
        status: The job's current status (`active`, `paused` or `completed`).
        max_runs: Completed scheduled runs after which the job is done; None = no limit.
        runs_completed: Completed scheduled runs so far.
        one_time: True for a one-time job.
        scheduled_run_ended: True when any scheduled run of the job has ended (any terminal
            status).
        streak: The current failure streak (`failure_streak`).
        max_consecutive_failures: Failed runs in a row after which an active job pauses.

    Returns:
        `completed`, `paused` or None.
    """
    if status == "completed":
        return None
    if max_runs is not None and runs_completed >= max_runs:
        return "completed"
    if one_time and scheduled_run_ended:
        return "completed"
    if status == "active" and streak.count >= max_consecutive_failures:
        return "paused"
    return None
