"""Misfire grace: how late a scheduled run may start and still run.

A scheduled run is started by a worker that polls Prefect (every 10 s by default) and then
starts a process, so even an on-time run begins seconds after its slot. A grace shorter than
that would skip on-time runs ("missed 0 s after"), hence the allowed values:

- `0`: no limit — a late run always runs (Prefect's own behaviour for Late runs);
- `60` .. `604800` (one minute .. one week): a run starting more than this many seconds after
  its scheduled time is skipped and recorded as missed.

Values 1..59 are refused at registration. Rows written before this rule (or by another tool)
with such a value are treated as 60 s, so an on-time run always runs.
"""

from __future__ import annotations

from datetime import timedelta

NO_LIMIT = 0
MIN_GRACE_SECONDS = 60
MAX_GRACE_SECONDS = 7 * 24 * 3600
GRACE_ALLOWED = (
    f"0 (no limit: late runs always run) or {MIN_GRACE_SECONDS}..{MAX_GRACE_SECONDS} seconds"
)


def validate_grace(seconds: int) -> int:
    """Check a misfire grace in seconds; returns it.

    Raises:
        ValueError: outside `0` or `60..604800`, saying what is allowed.
    """
    if seconds == NO_LIMIT or MIN_GRACE_SECONDS <= seconds <= MAX_GRACE_SECONDS:
        return seconds
    raise ValueError(f"{seconds} s is not allowed; allowed: {GRACE_ALLOWED}")


def is_misfire(lateness: timedelta, grace_seconds: int) -> bool:
    """True when a run that started `lateness` after its slot must be skipped as missed."""
    if grace_seconds <= NO_LIMIT:
        return False
    return lateness > timedelta(seconds=max(grace_seconds, MIN_GRACE_SECONDS))
