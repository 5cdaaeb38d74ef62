"""The project's one retry policy for HTTP providers (generators and exports), as pure rules.

What is retried: a failure a later attempt can fix (rate limits, transient server trouble,
dropped connections); each provider client says so on its error (`retryable`), using the
statuses below where the status alone decides. How long to wait: what the provider asked for
(`Retry-After`, or a provider's own field such as Gemini's `retryDelay`), else an exponential
backoff. A provider asking for more than `max_retry_after_s` is not waited for: the caller fails
fast (and, for exports, the retry-exports flow tries again later).

The tenacity adapter that runs this policy lives in `blocks/retrying.py`; nothing here sleeps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: Statuses a later attempt can fix when the provider says nothing more specific: request
#: timeout, rate limit, and the transient server or gateway errors (RFC 9110 §15.5.9, §15.6).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def retryable_status(status: int) -> bool:
    """True when an HTTP status is one a later attempt can fix (see `RETRYABLE_STATUSES`)."""
    return status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """How provider calls are retried (numbers only; `blocks.retrying` runs it).

    Attributes:
        attempts: Attempts per request, the first included (>= 1).
        backoff_s: First backoff wait in seconds, doubled per attempt (when no `Retry-After`).
        max_backoff_s: Longest backoff wait, in seconds.
        jitter_s: Up to this many random seconds added to a backoff wait.
        max_retry_after_s: Longest provider-requested wait honoured, in seconds; a longer one
            ends the retries at once.
    """

    attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    jitter_s: float = 1.0
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.backoff_s, self.max_backoff_s, self.jitter_s, self.max_retry_after_s) < 0:
            raise ValueError("waits must not be negative")

    def backoff(self, retry_number: int, *, jitter: float | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1 = the first retry), jitter included.

        Args:
            retry_number: Which retry this is, from 1.
            jitter: The random part in seconds (default: uniform in `[0, jitter_s]`).
        """
        base = self.backoff_s * 2 ** max(0, retry_number - 1)
        extra = random.uniform(0, self.jitter_s) if jitter is None else jitter
        return min(self.max_backoff_s, base + extra)

    def honours(self, retry_after: float | None) -> bool:
        """Whether a provider-requested wait (or none) is one we wait for."""
        return retry_after is None or retry_after <= self.max_retry_after_s

    def should_retry(self, *, retryable: bool, retry_after: float | None) -> bool:
        """Whether a failure is retried: retryable, and not asking for too long a wait."""
        return retryable and self.honours(retry_after)

    def wait(self, retry_number: int, retry_after: float | None) -> float:
        """Seconds to wait before retry `retry_number`: the provider's ask, else the backoff."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return self.backoff(retry_number)


#: The one policy generators and exports use (tests pass their own numbers).
DEFAULT_RETRY = RetryPolicy()


def retry_after_seconds(header: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (RFC 9110 §10.2.3), else None.

    Both forms are read: delta-seconds (`"120"`; a non-negative integer, decimals tolerated)
    and an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`; IMF-fixdate and the obsolete RFC 850
    and asctime forms), measured from `now`. A date in the past means no wait (0).

    Args:
        header: The header's value, or None when absent.
        now: The time the date is measured from (timezone-aware; default: now, UTC). Pass the
            response's own `Date` header when there is one, so the two clocks agree.

    Returns:
        Seconds (>= 0), or None when the value is absent or unreadable.
    """
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # the obsolete forms carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


def retry_after_from_headers(
    headers: dict[str, str] | None, now: datetime | None = None
) -> float | None:
    """`retry_after_seconds` of a response's headers (any case), measured from its `Date`.

    Args:
        headers: Response headers; names in any case.
        now: Used when the response has no readable `Date` header (default: now, UTC).
    """
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    reference = now
    date = lower.get("date")
    if date:
        try:
            reference = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            reference = now
    return retry_after_seconds(lower.get("retry-after"), reference)
