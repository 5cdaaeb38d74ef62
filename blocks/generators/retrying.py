"""Run a generator under the project's one retry policy (`domain.retry`, `blocks.retrying`).

Only `GenerationError`s with `retryable=True` are retried (429, 5xx, timeouts, dropped
connections), waiting what the provider asked for (Gemini's `RetryInfo.retryDelay`, an HTTP
`Retry-After`) or else backing off. Each attempt can run inside a fresh provider slot (`slot=`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from tenacity.wait import wait_base

from blocks.generators.base import AdGenerator, AdImage, AdRequest
from blocks.retrying import Sleep, SlotFactory, call_with_retries
from domain.retry import DEFAULT_RETRY

logger = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = DEFAULT_RETRY.attempts
DEFAULT_MAX_WAIT_S = DEFAULT_RETRY.max_retry_after_s


async def generate_with_retries(
    generator: AdGenerator,
    request: AdRequest,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: wait_base | None = None,
    max_wait: float = DEFAULT_MAX_WAIT_S,
    slot: SlotFactory | None = None,
    sleep: Sleep = asyncio.sleep,
) -> AdImage:
    """Generate one ad, retrying retryable `GenerationError`s.

    Args:
        generator: The generator block to call.
        request: The variation to generate.
        attempts: Attempts in all (the first call included).
        backoff: A tenacity wait for errors without `retry_after` (default: the policy's).
        max_wait: Longest provider-requested wait honoured (s); a longer one is raised at once.
        slot: Called before each attempt; the attempt runs inside the context manager it
            returns, so no slot is held while waiting between attempts.
        sleep: Awaited with the seconds to wait between attempts (injectable for tests).

    Returns:
        The generated ad.

    Raises:
        GenerationError: A permanent failure, or the last retryable one.

    Example:
        ```python
        from blocks.generators.retrying import generate_with_retries
        image = await generate_with_retries(generator, request, slot=slots.slot)
        ```
    """
    policy = replace(DEFAULT_RETRY, attempts=attempts, max_retry_after_s=max_wait)
    return await call_with_retries(
        lambda: generator.generate(request),
        what=f"generation for {request.template_name}",
        policy=policy,
        slot=slot,
        sleep=sleep,
        backoff=backoff,
        logger=logger,
    )
