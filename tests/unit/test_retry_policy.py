"""The one retry policy's pure parts: Retry-After (both RFC 9110 forms), backoff, what retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.retry import (
    DEFAULT_RETRY,
    RetryPolicy,
    retry_after_from_headers,
    retry_after_seconds,
    retryable_status,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),  # not RFC 9110, but sent by some proxies: read, not ignored
        # IMF-fixdate, the preferred HTTP-date form
        ("Sun, 29 Nov 2026 12:00:30 GMT", 30.0),
        # the obsolete RFC 850 and asctime forms a recipient must still accept (§5.6.7)
        ("Sunday, 29-Nov-26 12:01:00 GMT", 60.0),
        ("Sun Nov 29 12:00:05 2026", 5.0),
        # a date already past: no wait
        ("Sun, 29 Nov 2026 11:59:00 GMT", 0.0),
    ],
)
def test_retry_after_reads_delta_seconds_and_http_dates(header: str, seconds: float) -> None:
    assert retry_after_seconds(header, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "nan", "inf", "Sun, 99 Nov 2026"])
def test_retry_after_ignores_what_it_cannot_read(header: str | None) -> None:
    assert retry_after_seconds(header, NOW) is None


def test_retry_after_from_headers_measures_a_date_from_the_responses_own_clock() -> None:
    # The server's clock says 12:00:00; ours is 5 minutes ahead: the wait is still 30 s.
    headers = {
        "Retry-After": "Sun, 29 Nov 2026 12:00:30 GMT",
        "Date": "Sun, 29 Nov 2026 12:00:00 GMT",
    }
    assert retry_after_from_headers(headers, NOW + timedelta(minutes=5)) == 30.0
    assert retry_after_from_headers({"retry-after": "3"}) == 3.0
    assert retry_after_from_headers({}) is None and retry_after_from_headers(None) is None


def test_backoff_doubles_up_to_its_cap_and_adds_bounded_jitter() -> None:
    policy = RetryPolicy(attempts=6, backoff_s=1, max_backoff_s=5, jitter_s=1)
    assert [policy.backoff(n, jitter=0) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert all(1 <= policy.backoff(1) <= 2 for _ in range(50))


def test_a_provider_wait_is_used_as_is_unless_it_is_too_long() -> None:
    policy = RetryPolicy(max_retry_after_s=120)
    assert policy.wait(1, 27.0) == 27.0
    assert policy.should_retry(retryable=True, retry_after=120)
    assert not policy.should_retry(retryable=True, retry_after=3600)
    assert not policy.should_retry(retryable=False, retry_after=None)
    assert policy.should_retry(retryable=True, retry_after=None)


def test_policy_numbers_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(backoff_s=-1)
    assert DEFAULT_RETRY.attempts >= 1


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (408, True)])
def test_transient_statuses_are_retryable(status: int, retryable: bool) -> None:
    assert retryable_status(status) is retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_client_errors_are_not(status: int) -> None:
    assert not retryable_status(status)
