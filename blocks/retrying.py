"""The one tenacity adapter for the retry policy of `domain.retry` (generators and exports).

`call_with_retries` runs an async call, retrying the failures the provider client marked
retryable (`error.retryable`), waiting what the provider asked for (`error.retry_after`,
seconds) or else backing off; a provider asking for more than the policy's `max_retry_after_s`
ends the retries at once. Each attempt can run inside a fresh slot of a shared provider limit
(`slot=`), so a caller waiting between attempts holds no slot. The sleep is injectable, so tests
assert the waits asked for, never wall time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from domain.retry import DEFAULT_RETRY, RetryPolicy

T = TypeVar("T")
SlotFactory = Callable[[], AbstractAsyncContextManager[Any]]
Sleep = Callable[[float], Awaitable[None]]

_logger = logging.getLogger("ad_scheduler.retrying")


class RetryableError(Protocol):
    """What a provider error says about retrying (GenerationError, DeliveryError)."""

    @property
    def retryable(self) -> bool:
        """True when a later attempt can succeed."""
        ...

    @property
    def retry_after(self) -> float | None:
        """Seconds the provider asked to wait, when it said."""
        ...


def _retry_after(error: BaseException | None) -> float | None:
    value = getattr(error, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None


def is_retryable(error: BaseException, policy: RetryPolicy = DEFAULT_RETRY) -> bool:
    """Whether the policy retries `error`: marked retryable, asking for no longer a wait."""
    return policy.should_retry(
        retryable=getattr(error, "retryable", False) is True, retry_after=_retry_after(error)
    )


class _ProviderWait(wait_base):
    """Wait what the provider asked for, else the policy's (or the given) backoff."""

    def __init__(self, policy: RetryPolicy, backoff: wait_base | None) -> None:
        self.policy = policy
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        asked = _retry_after(error)
        if asked is None and self.backoff is not None:
            return float(self.backoff(retry_state))
        return self.policy.wait(retry_state.attempt_number, asked)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    slot: SlotFactory | None = None,
    sleep: Sleep = asyncio.sleep,
    backoff: wait_base | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> T:
    """Run `call`, retrying what the policy retries (see the module docstring).

    Args:
        call: Makes one attempt; raises a provider error (with `retryable`/`retry_after`).
        what: Names the request in retry log lines ("email of ad run …").
        policy: Attempts, backoff and the longest provider wait honoured.
        slot: Called before each attempt; the attempt runs inside the context manager it
            returns (e.g. one request's slot of a shared provider limit).
        sleep: Awaited with the seconds to wait between attempts.
        backoff: A tenacity wait used instead of the policy's backoff (deterministic tests).
        logger: Where retries are logged (default: this module's logger).

    Returns:
        What `call` returned.

    Raises:
        Exception: The first error not retried, or the last one when attempts ran out.
    """
    log = logger or _logger

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: attempt %d/%d failed (%s); retrying in %.1fs",
            what,
            state.attempt_number,
            policy.attempts,
            getattr(error, "message", None) or type(error).__name__,
            wait,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_ProviderWait(policy, backoff),
        retry=retry_if_exception(lambda error: is_retryable(error, policy)),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with slot() if slot is not None else nullcontext():
                return await call()
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
