"""The job-state rules, pure: completion at max_runs, the failure streak and the pause note."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.job_rules import (
    FailureStreak,
    RunOutcome,
    automatic_status,
    failure_streak,
    pause_note,
)

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _runs(*statuses: str) -> list[RunOutcome]:
    """Runs newest first, one day apart, each failure saying which it was."""
    return [
        RunOutcome(s, f"boom {i}" if s == "failed" else None, T0 - timedelta(days=i))
        for i, s in enumerate(statuses)
    ]


@pytest.mark.parametrize(
    ("statuses", "count", "last_error"),
    [
        ((), 0, None),
        (("completed", "failed", "failed"), 0, None),
        (("failed", "failed", "completed", "failed"), 2, "boom 0"),
        (("failed", "failed", "failed"), 3, "boom 0"),
        # Skipped and cancelled runs neither count nor break the streak.
        (("failed", "skipped", "cancelled", "failed", "completed"), 2, "boom 0"),
    ],
)
def test_failure_streak(statuses: tuple[str, ...], count: int, last_error: str | None) -> None:
    assert failure_streak(_runs(*statuses)) == FailureStreak(count, last_error)


def test_streak_quotes_the_newest_error_it_has() -> None:
    runs = [RunOutcome("failed", None, T0), RunOutcome("failed", "older", T0 - timedelta(1))]
    assert failure_streak(runs) == FailureStreak(2, "older")


def test_a_resume_forgives_earlier_failures() -> None:
    runs = _runs("failed", "failed", "failed")
    resumed = T0 - timedelta(days=1)  # after the third failure, at the second
    assert failure_streak(runs, resumed_at=resumed).count == 1
    assert failure_streak(runs, resumed_at=T0).count == 0
    assert failure_streak(runs, resumed_at=T0 - timedelta(days=10)).count == 3


def test_a_run_without_a_time_still_counts_after_a_resume() -> None:
    assert failure_streak([RunOutcome("failed", "x", None)], resumed_at=T0).count == 1


def test_pause_note_wording() -> None:
    assert pause_note(FailureStreak(3, "provider said no")) == (
        "Paused automatically after 3 consecutive failed runs (last error: provider said no). "
        "Fix the cause, then resume the job."
    )
    assert pause_note(FailureStreak(5, None)) == (
        "Paused automatically after 5 consecutive failed runs. Fix the cause, then resume the job."
    )


def test_pause_note_quotes_at_most_300_characters_of_the_error() -> None:
    note = pause_note(FailureStreak(3, "e" * 1000))
    assert "e" * 300 + ")" in note and "e" * 301 not in note


def _status(**kw: object) -> str | None:
    args: dict[str, object] = {
        "status": "active",
        "max_runs": None,
        "runs_completed": 0,
        "one_time": False,
        "scheduled_run_ended": False,
        "streak": FailureStreak(0, None),
        "max_consecutive_failures": 3,
    }
    args.update(kw)
    return automatic_status(**args)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, None),
        ({"max_runs": 8, "runs_completed": 7}, None),
        ({"max_runs": 8, "runs_completed": 8}, "completed"),
        ({"max_runs": 8, "runs_completed": 9}, "completed"),
        # A paused job that reached max_runs (runs completed before the pause) is done.
        ({"status": "paused", "max_runs": 2, "runs_completed": 2}, "completed"),
        ({"one_time": True}, None),
        ({"one_time": True, "scheduled_run_ended": True}, "completed"),
        ({"scheduled_run_ended": True}, None),  # a recurring job goes on
        ({"streak": FailureStreak(2, "x")}, None),
        ({"streak": FailureStreak(3, "x")}, "paused"),
        ({"streak": FailureStreak(1, "x"), "max_consecutive_failures": 1}, "paused"),
        # Only an active job pauses itself; completed stays completed.
        ({"status": "paused", "streak": FailureStreak(9, "x")}, None),
        ({"status": "completed", "streak": FailureStreak(9, "x")}, None),
        ({"status": "completed", "max_runs": 1, "runs_completed": 5}, None),
        # Completion wins over a pause when both hold.
        ({"max_runs": 3, "runs_completed": 3, "streak": FailureStreak(3, "x")}, "completed"),
    ],
)
def test_automatic_status(kw: dict[str, object], expected: str | None) -> None:
    assert _status(**kw) == expected
