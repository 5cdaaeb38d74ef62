"""generate_with_retries against the fake Gemini server: which failures are retried, how long."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from pydantic import SecretStr
from tenacity import wait_exponential

from blocks.generators.base import AdRequest, GenerationError
from blocks.generators.gemini import GeminiImageGenerator
from blocks.generators.retrying import generate_with_retries
from tests.support.http_fake import GEMINI_KEY, FakeServer, Reply, gemini_error

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
BACKOFF = wait_exponential(multiplier=1, min=1, max=30)  # deterministic: 1, 2, 4, ...


class Waits:
    """An injected sleep that records the requested waits and returns at once."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)


def gemini(fake: FakeServer) -> GeminiImageGenerator:
    return GeminiImageGenerator(api_key=SecretStr(GEMINI_KEY), base_url=f"{fake.url}/v1beta")


def rate_limited(delay: str | None) -> Reply:
    details = [{"@type": RETRY_INFO, "retryDelay": delay}] if delay else []
    return gemini_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", details)


async def test_429_waits_the_servers_retry_delay_then_succeeds(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    gemini_fake.then(rate_limited("27s"), rate_limited("1.5s"))
    waits = Waits()
    image = await generate_with_retries(
        gemini(gemini_fake), make_request(), backoff=BACKOFF, sleep=waits
    )
    assert image.width == 40
    assert waits.requested == [27.0, 1.5]
    assert len(gemini_fake.seen) == 3


async def test_5xx_and_429_without_delay_back_off(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    gemini_fake.then(
        gemini_error(503, "UNAVAILABLE", "overloaded"),
        rate_limited(None),
        gemini_error(500, "INTERNAL", "oops"),
    )
    waits = Waits()
    await generate_with_retries(
        gemini(gemini_fake), make_request(), attempts=4, backoff=BACKOFF, sleep=waits
    )
    assert waits.requested == [1.0, 2.0, 4.0]


async def test_gives_up_after_the_last_attempt_with_the_last_error(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    gemini_fake.then(*[gemini_error(503, "UNAVAILABLE", f"busy {i}") for i in range(3)])
    waits = Waits()
    with pytest.raises(GenerationError, match="busy 2") as caught:
        await generate_with_retries(
            gemini(gemini_fake), make_request(), attempts=3, backoff=BACKOFF, sleep=waits
        )
    assert caught.value.retryable is True
    assert waits.requested == [1.0, 2.0]
    assert len(gemini_fake.seen) == 3


@pytest.mark.parametrize(
    "reply",
    [
        gemini_error(404, "NOT_FOUND", "no such model"),
        Reply(200, {"promptFeedback": {"blockReason": "OTHER"}}),
    ],
)
async def test_permanent_failures_are_not_retried(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest], reply: Reply
) -> None:
    gemini_fake.then(reply)
    waits = Waits()
    with pytest.raises(GenerationError):
        await generate_with_retries(gemini(gemini_fake), make_request(), sleep=waits)
    assert waits.requested == []
    assert len(gemini_fake.seen) == 1


async def test_a_retry_delay_longer_than_max_wait_is_raised_at_once(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    gemini_fake.then(rate_limited("3600s"))
    waits = Waits()
    with pytest.raises(GenerationError) as caught:
        await generate_with_retries(gemini(gemini_fake), make_request(), max_wait=120, sleep=waits)
    assert caught.value.retry_after == 3600.0
    assert waits.requested == []


async def test_each_attempt_takes_its_own_slot_and_none_is_held_while_waiting(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    gemini_fake.then(rate_limited("5s"))
    events: list[str] = []

    @asynccontextmanager
    async def slot() -> AsyncIterator[None]:
        events.append("acquire")
        try:
            yield
        finally:
            events.append("release")

    async def sleep(seconds: float) -> None:
        events.append(f"sleep {seconds:g}")

    await generate_with_retries(gemini(gemini_fake), make_request(), slot=slot, sleep=sleep)
    assert events == ["acquire", "release", "sleep 5", "acquire", "release"]
