"""How an export request is sent: inside a slot of its provider limit, under the retry policy.

Every request first takes its provider's slot (`flows.limits.ProviderSlots`: the email block's
`requests_per_second`, the Slack webhook block's `messages_per_second`, shared by every run on
every worker), per attempt, so a request waiting to retry holds none. Retryable refusals (Resend
429 `rate_limit_exceeded`, 5xx, connection failures; Slack 429 and 5xx) are retried by the one
retry policy (`domain.retry`, run by `blocks.retrying`), waiting what the provider asked for in
`Retry-After`; a provider asking for more than the policy's `max_retry_after_s` is not waited
for, and the delivery is failed as retryable (the retry-exports flow tries again later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from blocks.retrying import Sleep, call_with_retries
from domain.retry import DEFAULT_RETRY, RetryPolicy
from flows.limits import ProviderSlots

T = TypeVar("T")


@dataclass
class SendSettings:
    """The retry policy of export requests and how waits are slept (tests record them).

    Attributes:
        policy: Attempts, backoff and the longest provider wait honoured.
        sleep: Awaited with the seconds to wait between attempts.
    """

    policy: RetryPolicy = DEFAULT_RETRY
    sleep: Sleep = asyncio.sleep


#: The module's settings (replace the object to change them, e.g. in tests).
SENDING = SendSettings()


async def send_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    slots: ProviderSlots | None,
    what: str,
    logger: Any,
) -> T:
    """Run one provider request, each attempt inside a slot of `slots` (when given)."""
    return await call_with_retries(
        call,
        what=what,
        policy=SENDING.policy,
        slot=slots.slot if slots is not None else None,
        sleep=SENDING.sleep,
        logger=logger,
    )
