"""Provider limits shared by every flow run on every worker (Prefect global concurrency limits).

Each generator block names a provider limit. `ensure_provider_limit` creates (or resizes) two
server-side global limits for it: `<name>` caps requests in flight (`max_in_flight`), and, when the
block sets `requests_per_minute`, `<name>:rate` is a rate limit (slots decay at rpm/60 per second).
Because they live on the Prefect server, three jobs firing together on three workers share them.

Why not `prefect.concurrency.asyncio.concurrency()` as is: it queues every acquisition of a process
through one service that sleeps for the server's `Retry-After`, which the server derives from the
average slot occupancy — measured here, 8 jobs of 0.5 s under a limit of 2 took 6.8 s instead of
2 s. `provider_slot` talks to the same lease API (same server-side guarantee, same lease expiry if
a worker dies holding a slot) but each waiter retries on its own with a short, capped, jittered
backoff, so a freed slot is taken within tens of milliseconds. Like `strict=True`, a limit that
does not exist is an error, never a silent no-op.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.exceptions import ObjectNotFound

from blocks.generators.base import AdGenerator

#: How long a slot is leased; a worker that dies holding one frees it when the lease expires.
LEASE_SECONDS = 300
#: Backoff between attempts to take a busy slot: starts small, capped, jittered.
FIRST_WAIT_S = 0.02
MAX_WAIT_S = 0.25


class ProviderLimitMissingError(RuntimeError):
    """The named global limit does not exist on the Prefect server (strict acquisition)."""


def rate_limit_name(limit: str) -> str:
    """Name of the rate-limit companion of a provider limit."""
    return f"{limit}:rate"


async def _upsert_limit(client: PrefectClient, name: str, limit: int, decay: float) -> None:
    try:
        current = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
            )
        except httpx.HTTPStatusError as exc:  # created by a concurrent caller: fine
            if exc.response.status_code != 409:
                raise
        return
    if current.limit != limit or (current.slot_decay_per_second or 0.0) != decay:
        await client.update_global_concurrency_limit(
            name,
            GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay),
        )


async def ensure_provider_limit(generator: AdGenerator) -> None:
    """Create or resize the generator's global limits on the Prefect server (idempotent)."""
    async with get_client() as client:
        await _upsert_limit(client, generator.provider_limit, generator.max_in_flight, 0.0)
        if generator.requests_per_minute:
            per_second = generator.requests_per_minute / 60
            # A burst of at most one second's worth keeps the rate honest from the first call.
            await _upsert_limit(
                client,
                rate_limit_name(generator.provider_limit),
                max(1, int(per_second)),
                per_second,
            )


async def _acquire(
    client: PrefectClient, name: str, mode: str, lease_seconds: float
) -> str | None:
    wait = FIRST_WAIT_S
    while True:
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode=mode, lease_duration=lease_seconds  # type: ignore[arg-type]
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            server_hint = float(exc.response.headers.get("Retry-After", wait))
            # Rate limits know exactly when the next slot decays: trust the server there.
            # Concurrency slots free whenever a holder finishes: poll soon instead.
            delay = server_hint if mode == "rate_limit" else min(server_hint, wait)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        body = response.json()
        if not body.get("limits"):
            raise ProviderLimitMissingError(
                f"global concurrency limit {name!r} does not exist on the Prefect server; "
                "create it with ensure_provider_limit() or `prefect gcl create`"
            )
        lease_id = body.get("lease_id")
        return str(lease_id) if lease_id else None


@asynccontextmanager
async def provider_slot(
    generator: AdGenerator, *, client: PrefectClient | None = None
) -> AsyncIterator[None]:
    """Hold one slot of the generator's provider limit (and one rate token, if rate-limited).

    Args:
        generator: The generator block whose `provider_limit` to draw from.
        client: An open Prefect client to reuse (one per flow run saves a connection per call).

    Raises:
        ProviderLimitMissingError: The limit was never created (a misnamed limit fails loudly).
    """
    async with _client(client) as api:
        if generator.requests_per_minute:
            await _acquire(api, rate_limit_name(generator.provider_limit), "rate_limit", 60)
        lease = await _acquire(api, generator.provider_limit, "concurrency", LEASE_SECONDS)
        try:
            yield
        finally:
            if lease is not None:
                # Shielded: a cancelled run must still hand its slot back.
                await asyncio.shield(api.release_concurrency_slots_with_lease(lease))


@asynccontextmanager
async def _client(client: PrefectClient | None) -> AsyncIterator[PrefectClient]:
    if client is not None:
        yield client
        return
    async with get_client() as fresh:
        yield fresh
