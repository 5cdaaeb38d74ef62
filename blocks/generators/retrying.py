"""Run a generator with retries for the failures a retry can fix.

Only `GenerationError`s with `retryable=True` are retried (429, 5xx, timeouts, dropped
connections). When the provider said how long to wait (Gemini's `RetryInfo.retryDelay`, an HTTP
`Retry-After`), that wait is used as is; otherwise the wait backs off exponentially with jitter.
A provider that asks for a longer wait than `max_wait` is not waited for: the error is raised so
the run fails fast instead of sleeping for an hour.

Each attempt can run inside a fresh provider slot (`slot=`), so a run that waits between attempts
does not hold a slot of the shared provider limit while it sleeps.

The sleep function is injectable so tests assert the waits that were asked for, never wall time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from blocks.generators.base import AdGenerator, AdImage, AdRequest, GenerationError

logger = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 4
DEFAULT_MAX_WAIT_S = 120.0
DEFAULT_BACKOFF: wait_base = wait_exponential_jitter(multiplier=2, max=60, jitter=2)

SlotFactory = Callable[[], AbstractAsyncContextManager[Any]]
Sleep = Callable[[float], Awaitable[None]]


class _ProviderWait(wait_base):
    """Wait what the provider asked for, else fall back to `backoff`."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, GenerationError) and error.retry_after is not None:
            return max(0.0, error.retry_after)
        return float(self.backoff(retry_state))


def _retryable(max_wait: float) -> Callable[[BaseException], bool]:
    def check(error: BaseException) -> bool:
        if not isinstance(error, GenerationError) or not error.retryable:
            return False
        return error.retry_after is None or error.retry_after <= max_wait

    return check


async def generate_with_retries(
    generator: AdGenerator,
    request: AdRequest,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: wait_base = DEFAULT_BACKOFF,
    max_wait: float = DEFAULT_MAX_WAIT_S,
    slot: SlotFactory | None = None,
    sleep: Sleep = asyncio.sleep,
) -> AdImage:
    """Generate one ad, retrying retryable `GenerationError`s.

    Args:
        generator: The generator block to call.
        request: The variation to generate.
        attempts: Attempts in all (the first call included).
        backoff: Tenacity wait strategy for retryable errors that carry no `retry_after`.
        max_wait: Longest provider-requested wait honoured; a longer one is raised at once.
        slot: Called before each attempt; the attempt runs inside the context manager it
            returns (for example `lambda: provider_slot(generator)`), so no slot is held while
            waiting between attempts.
        sleep: Awaited with the seconds to wait between attempts (injectable for tests).

    Returns:
        The generated ad.

    Raises:
        GenerationError: A permanent failure, or the last retryable one.

    Example:
        ```python
        from blocks.generators.retrying import generate_with_retries
        image = await generate_with_retries(
            generator, request, slot=lambda: provider_slot(generator)
        )
        ```
    """

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "Generation attempt %d/%d for %s failed (%s); retrying in %.1fs",
            state.attempt_number,
            attempts,
            request.template_name,
            error,
            wait,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_ProviderWait(backoff),
        retry=retry_if_exception(_retryable(max_wait)),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with slot() if slot is not None else nullcontext():
                return await generator.generate(request)
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
