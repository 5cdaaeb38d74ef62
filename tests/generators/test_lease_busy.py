"""Lease calls ride out a busy Prefect server in milliseconds, not Prefect's 2 s backoff.

A SQLite-backed Prefect server answers 503 at once when another write commits inside a lease
transaction ("database is locked"). A real server cannot be made to do that on cue, so a fake
Prefect API on 127.0.0.1 answers the lease endpoints with scripted 503s; the real
`PrefectClient` talks to it. Prefect's client logs "Received response with retryable status
code" (logger `prefect.client`) each time it takes over with its own 2**n s backoff: its absence
shows the quick path answered.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prefect.client.orchestration import PrefectClient

from flows.limits import BUSY_ATTEMPTS, _try_acquire, release_lease, renew_lease
from tests.support.http_fake import FakeServer, Reply, Seen, running

LEASE = uuid.uuid4()
GRANTED = {"limits": [{"id": str(uuid.uuid4()), "name": "gen", "limit": 4}], "lease_id": str(LEASE)}
BUSY = Reply(503, {"exception_message": "Service Unavailable"})
PREFECT_RETRY_LOG = "Received response with retryable status code"


def _ok(request: Seen) -> Reply:
    if request.path.startswith("/api/csrf-token"):  # as a server with CSRF protection off
        return Reply(422, {"detail": "CSRF protection is disabled."})
    return Reply(200, GRANTED if request.path.endswith("increment-with-lease") else None)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeServer, PrefectClient]]:
    with running(FakeServer(_ok)) as fake:
        async with PrefectClient(api=f"{fake.url}/api") as client:
            # The client's first change request learns the server's CSRF setting (a request
            # of its own); made here, so that the scripted answers meet the calls under test.
            await release_lease(client, uuid.uuid4())
            fake.seen.clear()
            yield fake, client


@pytest.fixture
def prefect_retries(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="prefect.client")
    return caplog


def _api_calls(fake: FakeServer) -> list[Seen]:
    return [r for r in fake.requests if "/concurrency_limits/" in r.path]


def _retries_by_prefect(caplog: pytest.LogCaptureFixture) -> int:
    return sum(PREFECT_RETRY_LOG in record.getMessage() for record in caplog.records)


async def test_busy_answers_are_retried_quickly_with_the_same_request(
    api: tuple[FakeServer, PrefectClient], prefect_retries: pytest.LogCaptureFixture
) -> None:
    fake, client = api
    fake.then(BUSY, BUSY)

    granted, lease = await _try_acquire(client, "gen", 60, slots=3)

    assert (granted, lease) == (True, LEASE)
    posts = [
        r for r in fake.requests if r.path == "/api/v2/concurrency_limits/increment-with-lease"
    ]
    assert len(posts) == 3
    assert all(
        p.json == {"names": ["gen"], "slots": 3, "mode": "concurrency", "lease_duration": 60}
        for p in posts
    )
    assert _retries_by_prefect(prefect_retries) == 0


async def test_a_renewal_answered_busy_is_sent_again(
    api: tuple[FakeServer, PrefectClient], prefect_retries: pytest.LogCaptureFixture
) -> None:
    fake, client = api
    fake.then(BUSY)

    await renew_lease(client, LEASE, 300)

    renewals = [r for r in fake.requests if r.path.endswith(f"/leases/{LEASE}/renew")]
    assert [r.json for r in renewals] == [{"lease_duration": 300}] * 2
    assert _retries_by_prefect(prefect_retries) == 0


async def test_a_full_limit_is_one_call_and_no_retry(
    api: tuple[FakeServer, PrefectClient], prefect_retries: pytest.LogCaptureFixture
) -> None:
    fake, client = api
    fake.then(Reply(423, {"detail": "Concurrency limit reached"}))

    assert await _try_acquire(client, "gen", 60) == (False, None)
    assert len(_api_calls(fake)) == 1


async def test_a_server_busy_for_long_is_handed_to_prefects_own_retries(
    api: tuple[FakeServer, PrefectClient], prefect_retries: pytest.LogCaptureFixture
) -> None:
    fake, client = api
    fake.then(*[BUSY] * (BUSY_ATTEMPTS + 1))  # every quick attempt, and Prefect's first try

    await release_lease(client, LEASE)

    releases = [r for r in fake.requests if r.path.endswith("/decrement-with-lease")]
    assert len(releases) == BUSY_ATTEMPTS + 2
    assert {r.json["lease_id"] for r in releases} == {str(LEASE)}
    assert _retries_by_prefect(prefect_retries) == 1


@pytest.mark.parametrize(
    ("status", "call"),
    [
        (404, lambda client: renew_lease(client, LEASE, 300)),  # an expired lease
        (500, lambda client: _try_acquire(client, "gen", 60)),  # an error Prefect would not retry
    ],
    ids=["expired-lease", "server-error"],
)
async def test_an_error_that_is_not_busy_is_raised_at_once_as_prefect_raises_it(
    api: tuple[FakeServer, PrefectClient],
    status: int,
    call: Callable[[PrefectClient], Awaitable[object]],
) -> None:
    fake, client = api
    fake.then(Reply(status, {"detail": "no"}))

    with pytest.raises(httpx.HTTPStatusError) as raised:
        await call(client)

    assert raised.value.response.status_code == status
    assert len(_api_calls(fake)) == 1
