"""Misfire grace: the allowed range, and that an on-time run always runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.misfire import is_misfire, validate_grace


@pytest.mark.parametrize("seconds", [0, 60, 3600, 604800])
def test_allowed_graces(seconds: int) -> None:
    assert validate_grace(seconds) == seconds


@pytest.mark.parametrize("seconds", [-1, 1, 30, 59, 604801])
def test_refused_graces_say_what_is_allowed(seconds: int) -> None:
    with pytest.raises(
        ValueError, match=r"allowed: 0 \(no limit: late runs always run\) or 60..604800"
    ):
        validate_grace(seconds)


@pytest.mark.parametrize(
    ("lateness", "grace", "missed"),
    [
        (timedelta(seconds=0.3), 0, False),  # the reported case: grace 0 skipped on-time runs
        (timedelta(days=3), 0, False),  # 0 = no limit
        (timedelta(seconds=0.3), 60, False),
        (timedelta(seconds=12), 60, False),  # a worker polling every 10 s
        (timedelta(seconds=60), 60, False),
        (timedelta(seconds=60.001), 60, True),
        (timedelta(seconds=3599), 3600, False),
        (timedelta(seconds=3601), 3600, True),
        (timedelta(seconds=5), 1, False),  # a legacy row below the minimum counts as 60 s
        (timedelta(seconds=61), 1, True),
    ],
)
def test_is_misfire(lateness: timedelta, grace: int, missed: bool) -> None:
    assert is_misfire(lateness, grace) is missed
