"""Provider limits shared by every flow run on every worker (Prefect global concurrency limits).

Each generator block names a provider limit. `ensure_provider_limit` creates (or resizes) two
server-side global limits for it: `<name>` caps requests in flight (`max_in_flight`), and, when the
block sets `requests_per_minute`, `<name>:rate` paces request starts: a sliding window of
`rate_window(rpm)` — at most L requests start in any W seconds, L/W = rpm/60.
Because they live on the Prefect server, three jobs firing together on three workers share them.

Why not `prefect.concurrency.asyncio.concurrency()` as is: it queues every acquisition of a process
through one service that sleeps for the server's `Retry-After`, which the server derives from the
average slot occupancy — measured here, 8 jobs of 0.5 s under a limit of 2 took 6.8 s instead of
2 s. This module talks to the same lease API (same server-side guarantee, same lease expiry if a
worker dies holding a slot) with two changes:

- each waiter retries on its own with a short, capped, jittered backoff, so a slot freed by
  another worker is taken within tens of milliseconds;
- `ProviderSlots` (one per run) hands a finished request's lease straight to the run's next
  request instead of releasing it and acquiring a new one: two API round trips fewer per request
  (measured ~0.1–0.4 s on this 2-core machine under load), while the number of leases held — the
  only thing the provider sees — never exceeds the global limit. A run releases its leases as soon
  as it has no more requests to start, so other runs get them back.

Why the rate is a windowed concurrency limit and not a Prefect rate limit (slot decay): in
Prefect 3.9.1 the server computes decay from the row's `updated` time, and every *refused*
acquisition rewrites that row (its denied-slot count), so each refused poll throws away the
decay accumulated since the last write; with several waiters polling, the granted rate falls
well below the configured one (measured 7.3–8.2 grants/s for a 10/s limit). A concurrency slot
held for exactly W seconds after a request starts gives the same guarantee — no more than L
starts in any W-second window, which is what a provider's token bucket accepts — and refused
polls cost nothing.

Like `strict=True`, a limit that does not exist is an error, never a silent no-op.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
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


#: Lease on a rate window slot: if the process dies, the slot comes back after this long.
RATE_LEASE_SECONDS = 60


def rate_limit_name(limit: str) -> str:
    """Name of the rate-limit companion of a provider limit."""
    return f"{limit}:rate"


def rate_window(requests_per_minute: int) -> tuple[int, float]:
    """(L, W): at most L request starts in any W seconds, with L / W = rpm / 60 and L >= 1."""
    per_second = requests_per_minute / 60
    slots = max(1, math.ceil(per_second))
    return slots, slots / per_second


_pending_releases: set[asyncio.Task[None]] = set()


def _release_later(lease: uuid.UUID, delay: float, client: PrefectClient | None) -> None:
    """Hand a rate-window slot back `delay` seconds after its request started.

    Uses `client` when it is still open then (a warm connection releases on time), else a new one.
    """

    async def release() -> None:
        await asyncio.sleep(max(0.0, delay))
        if client is not None and client._started and not client._closed:
            await client.release_concurrency_slots_with_lease(lease)
            return
        async with get_client() as fresh:
            await fresh.release_concurrency_slots_with_lease(lease)

    task = asyncio.ensure_future(release())
    _pending_releases.add(task)
    task.add_done_callback(_pending_releases.discard)


async def _hold_rate_slot(
    client: PrefectClient, generator: AdGenerator, *, keep_client: bool = True
) -> None:
    """Take one start in the generator's rate window (released when its window ends)."""
    assert generator.requests_per_minute
    _slots, window = rate_window(generator.requests_per_minute)
    lease = await _acquire(client, rate_limit_name(generator.provider_limit), RATE_LEASE_SECONDS)
    if lease is not None:
        # The window starts now, when the request may start; it ends W seconds later.
        _release_later(lease, window, client if keep_client else None)


async def drain_rate_releases() -> None:
    """Wait for every scheduled rate-window release of this process (end of a run)."""
    if _pending_releases:
        await asyncio.gather(*list(_pending_releases), return_exceptions=True)


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


async def ensure_provider_limit(
    generator: AdGenerator, *, client: PrefectClient | None = None
) -> None:
    """Create or resize the generator's global limits on the Prefect server (idempotent)."""
    async with _client(client) as api:
        await _upsert_limit(api, generator.provider_limit, generator.max_in_flight, 0.0)
        if generator.requests_per_minute:
            slots, _window = rate_window(generator.requests_per_minute)
            await _upsert_limit(api, rate_limit_name(generator.provider_limit), slots, 0.0)


async def _acquire(client: PrefectClient, name: str, lease_seconds: float) -> uuid.UUID | None:
    """Take one slot of the concurrency limit `name` under a lease, polling while it is full."""
    wait = FIRST_WAIT_S
    while True:
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            # The server's Retry-After is an average occupancy; a slot frees whenever a holder
            # finishes, so poll soon (capped, jittered) instead.
            server_hint = float(exc.response.headers.get("Retry-After", wait))
            await asyncio.sleep(min(server_hint, wait) * random.uniform(0.8, 1.2))
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        body = response.json()
        if not body.get("limits"):
            raise ProviderLimitMissingError(
                f"global concurrency limit {name!r} does not exist on the Prefect server; "
                "create it with ensure_provider_limit() or `prefect gcl create`"
            )
        lease_id = body.get("lease_id")
        return uuid.UUID(str(lease_id)) if lease_id else None


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
            # A client opened here closes on exit: the delayed release then opens its own.
            await _hold_rate_slot(api, generator, keep_client=client is not None)
        lease = await _acquire(api, generator.provider_limit, LEASE_SECONDS)
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


class ProviderSlots:
    """The provider-limit slots of one run, handed from request to request.

    At the start the run asks for a whole first wave of slots in one call (`prime`); every
    finished request hands its slot to the run's next waiting request instead of releasing it.
    Slots of single leases go back to the server as soon as the run has no more waiting requests;
    the primed lease (one lease for several slots) goes back when all of its slots are idle.

    Args:
        generator: The generator whose limits to draw from.
        client: An open Prefect client, used for every call.
        requests: How many requests this run will make.

    Example:
        ```python
        async with get_client() as client, ProviderSlots(gen, client, requests=24) as slots:
            await slots.prime(8)
            async with slots.slot():
                image = await gen.generate(request)
        ```
    """

    def __init__(self, generator: AdGenerator, client: PrefectClient, *, requests: int) -> None:
        self._generator = generator
        self._client = client
        self._unfinished = requests
        self._holding = 0
        self._idle: list[tuple[uuid.UUID, float]] = []  # single leases: (id, acquired/renewed)
        self._bulk: uuid.UUID | None = None
        self._bulk_size = 0
        self._bulk_free = 0
        self._bulk_since = 0.0

    async def __aenter__(self) -> ProviderSlots:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await drain_rate_releases()
        leases = [lease for lease, _ in self._idle]
        if self._bulk is not None:
            leases.append(self._bulk)
        self._idle, self._bulk, self._bulk_free = [], None, 0
        await asyncio.shield(self._release_all(leases))

    async def _release_all(self, leases: list[uuid.UUID]) -> None:
        for lease in leases:
            await self._client.release_concurrency_slots_with_lease(lease)

    async def prime(self, slots: int) -> int:
        """Take up to `slots` slots in one call, if that many are free now; returns how many."""
        slots = min(slots, self._generator.max_in_flight, self._unfinished)
        if slots < 2:
            return 0
        try:
            response = await self._client.increment_concurrency_slots_with_lease(
                names=[self._generator.provider_limit],
                slots=slots,
                mode="concurrency",
                lease_duration=LEASE_SECONDS,
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:  # not that many free: go one by one
                return 0
            raise
        body = response.json()
        if not body.get("limits"):
            raise ProviderLimitMissingError(
                f"global concurrency limit {self._generator.provider_limit!r} does not exist"
            )
        self._bulk = uuid.UUID(str(body["lease_id"]))
        self._bulk_size = self._bulk_free = slots
        self._bulk_since = time.monotonic()
        return slots

    def done(self, requests: int = 1) -> None:
        """Count `requests` of this run as finished (made, or given up on)."""
        self._unfinished -= requests

    async def _renewed(self, lease: uuid.UUID, since: float) -> bool:
        if time.monotonic() - since < LEASE_SECONDS / 2:
            return True
        try:  # an old lease: renew it rather than risk it expiring mid-request
            await self._client.renew_concurrency_lease(lease, LEASE_SECONDS)
            return True
        except httpx.HTTPStatusError:
            return False  # expired meanwhile: the server already freed it

    async def _take(self) -> tuple[str, uuid.UUID | None]:
        if self._bulk is not None and self._bulk_free > 0:
            if await self._renewed(self._bulk, self._bulk_since):
                self._bulk_since = max(self._bulk_since, time.monotonic() - LEASE_SECONDS / 2)
                self._bulk_free -= 1
                return "bulk", self._bulk
            self._bulk, self._bulk_free = None, 0
        while self._idle:
            lease, since = self._idle.pop()
            if await self._renewed(lease, since):
                return "single", lease
        fresh = await _acquire(self._client, self._generator.provider_limit, LEASE_SECONDS)
        return "single", fresh

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot (and one rate token, when rate-limited) for one provider request."""
        if self._generator.requests_per_minute:
            await _hold_rate_slot(self._client, self._generator)
        kind, lease = await self._take()
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            # Requests of this run still waiting for a slot (this one is about to finish).
            waiting = self._unfinished - self._holding - 1
            if kind == "bulk":
                self._bulk_free += 1
                if waiting <= 0 and self._bulk_free == self._bulk_size and self._bulk:
                    bulk, self._bulk, self._bulk_free = self._bulk, None, 0
                    await asyncio.shield(self._release_all([bulk]))
            elif lease is not None:
                if waiting > 0:
                    self._idle.append((lease, time.monotonic()))
                else:
                    await asyncio.shield(self._release_all([lease]))
