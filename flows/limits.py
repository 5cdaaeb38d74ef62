"""Provider limits shared by every flow run on every worker (Prefect global concurrency limits).

The one limit mechanism of the project, for generators and exports alike. A `ProviderLimit`
names a provider's budget: at most `max_in_flight` requests at once, and/or at most
`per_second` request starts. `ensure_provider_limit` creates (or resizes) the server-side global
limits: `<name>` caps requests in flight, and `<name>:rate` paces request starts as a sliding
window — at most L starts in any W seconds, L/W = the rate (`rate_window`). A generator block
(`provider_limit`, `max_in_flight`, `requests_per_minute`), a Resend email block
(`requests_per_second`) and a Slack webhook block (`messages_per_second`) each map to one
(`limit_of`). Because the limits live on the Prefect server, three jobs firing together on
three workers share them.

Why not `prefect.concurrency.asyncio.concurrency()` as is: it queues every acquisition of a process
through one service that sleeps for the server's `Retry-After`, which the server derives from the
average slot occupancy — measured here, 8 jobs of 0.5 s under a limit of 2 took 6.8 s instead of
2 s. This module talks to the same lease API (same server-side guarantee, same lease expiry if a
worker dies holding a slot) with three changes:

- each waiter retries on its own with a short, capped, jittered backoff, so a slot freed by
  another worker is taken within tens of milliseconds;
- `ProviderSlots` (one per run) hands a finished request's concurrency lease straight to the
  run's next request instead of releasing it and acquiring a new one: two API round trips fewer
  per request, while the number of leases held — the only thing the provider sees — never
  exceeds the global limit;
- a run keeps a rate slot whose window has ended while it still has requests waiting, and starts
  the next one under it at once (its new window counted from that start). Releasing and taking it
  back cost an API round trip plus a polling gap per window — measured 0.70–0.79 of the
  provider's rate when every window paid it; reusing it gives the rate itself. A rate slot nobody
  in the run is waiting for goes back to the server as its window ends, so other runs get it.

Why the rate is a windowed concurrency limit and not a Prefect rate limit (slot decay): in
Prefect 3.9.1 the server computes decay from the row's `updated` time, and every *refused*
acquisition rewrites that row (its denied-slot count), so each refused poll throws away the
decay accumulated since the last write; with several waiters polling, the granted rate falls
well below the configured one (measured 7.3–8.2 grants/s for a 10/s limit). A concurrency slot
held for W seconds after a request starts gives the same guarantee — no more than L starts in
any W-second window, which is what a provider's token bucket accepts — and refused polls cost
nothing. A window starts when the request is about to be sent (after its concurrency slot), and
is `RATE_SAFETY` longer than the exact rate, for the jitter between sending and arriving.

Like `strict=True`, a limit that does not exist is an error, never a silent no-op — unless the
caller asks for it to be created (`ProviderSlots(ensure=True)`, what a run does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import httpx
from prefect.client.base import PrefectHttpxAsyncClient
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from blocks.generators.base import AdGenerator

logger = logging.getLogger(__name__)

#: How long a slot is leased; a worker that dies holding one frees it when the lease expires.
LEASE_SECONDS = 300
#: Backoff between attempts to take a busy slot: starts small, capped, jittered.
FIRST_WAIT_S = 0.02
MAX_WAIT_S = 0.25
#: Lease on a rate window slot: if the process dies, the slot comes back after this long.
RATE_LEASE_SECONDS = 60
#: A rate window is this much longer than the exact rate asks (send-to-arrival jitter).
RATE_SAFETY = 0.02


class ProviderLimitMissingError(RuntimeError):
    """The named global limit does not exist on the Prefect server (strict acquisition)."""


@dataclass(frozen=True)
class ProviderLimit:
    """A provider's budget, shared by every run on every worker.

    Attributes:
        name: The Prefect global concurrency limit's name (its rate companion adds `:rate`).
        max_in_flight: Requests in flight at once across all workers, or None (no cap).
        per_second: Request starts per second across all workers, or None (no pacing).
    """

    name: str
    max_in_flight: int | None = None
    per_second: float | None = None


def limit_of(source: AdGenerator | ProviderLimit) -> ProviderLimit:
    """The `ProviderLimit` of a generator block (or the limit itself)."""
    if isinstance(source, ProviderLimit):
        return source
    rpm = source.requests_per_minute
    return ProviderLimit(
        name=source.provider_limit,
        max_in_flight=source.max_in_flight,
        per_second=rpm / 60 if rpm else None,
    )


def rate_limit_name(limit: str) -> str:
    """Name of the rate-limit companion of a provider limit."""
    return f"{limit}:rate"


def rate_window(requests_per_minute: float) -> tuple[int, float]:
    """(L, W): at most L request starts in any W seconds, with L / W = rpm / 60 and L >= 1."""
    per_second = requests_per_minute / 60
    slots = max(1, math.ceil(per_second))
    return slots, slots / per_second


def _window_of(limit: ProviderLimit) -> tuple[int, float]:
    assert limit.per_second
    slots, window = rate_window(limit.per_second * 60)
    return slots, window * (1 + RATE_SAFETY)


_pending_releases: set[asyncio.Task[None]] = set()


def _release_later(lease: uuid.UUID, delay: float, client: PrefectClient | None) -> None:
    """Hand a rate-window slot back `delay` seconds from now (when its window ends).

    Uses `client` when it is still open then (a warm connection releases on time), else a new one.
    """

    async def release() -> None:
        await asyncio.sleep(max(0.0, delay))
        if client is not None and client._started and not client._closed:
            await release_lease(client, lease)
            return
        async with get_client() as fresh:
            await release_lease(fresh, lease)

    task = asyncio.ensure_future(release())
    _pending_releases.add(task)
    task.add_done_callback(_pending_releases.discard)


async def drain_rate_releases() -> None:
    """Wait for every scheduled rate-window release of this process (end of a run)."""
    if _pending_releases:
        await asyncio.gather(*list(_pending_releases), return_exceptions=True)


#: Runs' slot hand-backs started by `hand_back_later` and not yet finished.
_handing_back: set[asyncio.Task[None]] = set()


def hand_back_later(hand_back: Awaitable[None]) -> None:
    """Run `hand_back` (a run handing its slots back) without waiting for it.

    A run's last `decrement-with-lease` starts when its last request ends; handing the slots
    back waits for it (and for a rate window still open), which the run's end need not do.
    `slots_handed_back` waits for every one started: a process calls it before it ends (the
    scheduled run's final-state hook does), or the leases of an unfinished one are freed only
    when they expire (`LEASE_SECONDS`).
    """
    task = asyncio.ensure_future(hand_back)
    _handing_back.add(task)
    task.add_done_callback(_handing_back.discard)


async def slots_handed_back() -> None:
    """Wait for every `hand_back_later` of this process. Never raises: a failed one is logged
    (the server frees the leases it held when they expire)."""
    while _handing_back:
        started = list(_handing_back)
        for outcome in await asyncio.gather(*started, return_exceptions=True):
            if isinstance(outcome, BaseException):
                logger.warning(
                    "provider slots not handed back (%s): the server frees them when their "
                    "leases expire",
                    type(outcome).__name__,
                )
        _handing_back.difference_update(started)


async def _upsert_limit(client: PrefectClient, name: str, limit: int, decay: float) -> None:
    try:
        current = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
            )
        except ObjectAlreadyExists:  # created by a concurrent caller (Prefect's 409): fine
            pass
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 409:
                raise
        return
    if current.limit != limit or (current.slot_decay_per_second or 0.0) != decay:
        await client.update_global_concurrency_limit(
            name,
            GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay),
        )


async def ensure_provider_limit(
    source: AdGenerator | ProviderLimit, *, client: PrefectClient | None = None
) -> None:
    """Create or resize the global limits of a generator or provider limit (idempotent)."""
    limit = limit_of(source)
    async with _client(client) as api:
        if limit.max_in_flight:
            await _upsert_limit(api, limit.name, limit.max_in_flight, 0.0)
        if limit.per_second:
            slots, _window = _window_of(limit)
            await _upsert_limit(api, rate_limit_name(limit.name), slots, 0.0)


def _missing(name: str) -> ProviderLimitMissingError:
    return ProviderLimitMissingError(
        f"global concurrency limit {name!r} does not exist on the Prefect server; "
        "create it with ensure_provider_limit() or `prefect gcl create`"
    )


#: Quick attempts at a lease call that the server answered "busy" before Prefect's client
#: takes over with its own retries (2 s, 4 s, ...).
BUSY_ATTEMPTS = 6
#: Answers meaning "the server could not do it now, ask again" (what Prefect's client retries).
_BUSY_STATUSES = frozenset({429, 502, 503})


async def _lease_request(
    client: PrefectClient, path: str, body: dict[str, object]
) -> httpx.Response:
    """POST one call of the concurrency-lease API, retrying a busy server within milliseconds.

    Why not `client.request(...)` alone: Prefect's client (prefect/client/base.py,
    `PrefectHttpxAsyncClient._send_with_retry`) waits 2**n seconds after a 503 with no
    Retry-After. A SQLite-backed server (the embedded default) answers 503 at once when another
    write commits inside its lease transaction (sqlite "database is locked", the server's
    `is_client_retryable_exception`): measured on bench/e2e.py, most runs met one, and each
    cost the run 2 s before its first template. The call is sent here without that wrapper,
    busy answers and dropped connections are retried after FIRST_WAIT_S..MAX_WAIT_S (jittered)
    up to BUSY_ATTEMPTS times, and only then handed to Prefect's client with its own retries.
    A refused transaction changed nothing on the server, so sending it again is safe.

    Returns:
        The response (any non-busy status; the caller decides what 423 or 404 mean).

    Raises:
        httpx.HTTPStatusError: What Prefect's client raises once its own retries are spent.
    """
    http = cast(PrefectHttpxAsyncClient, client._client)
    wait = FIRST_WAIT_S
    for _attempt in range(BUSY_ATTEMPTS):
        request = http.build_request("POST", path, json=body)
        try:
            # The CSRF token Prefect's send would add (fetched once per client; a server with
            # CSRF protection off tells the client so, and it stops asking).
            await http._add_csrf_headers(request)
            response: httpx.Response | None = await httpx.AsyncClient.send(http, request)
        except (httpx.TransportError, OSError):
            response = None
        if response is not None and response.status_code == 403:
            break  # e.g. an expired CSRF token: Prefect's send renews it
        if response is not None and response.status_code not in _BUSY_STATUSES:
            return response
        await asyncio.sleep(wait * random.uniform(0.8, 1.2))
        wait = min(wait * 2, MAX_WAIT_S)
    try:
        return await client.request("POST", path, json=body)  # type: ignore[arg-type]
    except httpx.HTTPStatusError as exc:
        return exc.response


def _raise_for(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        response.raise_for_status()
    return response


async def _increment(
    client: PrefectClient, name: str, slots: int, lease_seconds: float
) -> httpx.Response:
    return await _lease_request(
        client,
        "/v2/concurrency_limits/increment-with-lease",
        {"names": [name], "slots": slots, "mode": "concurrency", "lease_duration": lease_seconds},
    )


async def renew_lease(client: PrefectClient, lease: uuid.UUID, lease_seconds: float) -> None:
    """Renew a concurrency lease (raises httpx.HTTPStatusError when it has expired: 404/410)."""
    _raise_for(
        await _lease_request(
            client,
            f"/v2/concurrency_limits/leases/{lease}/renew",
            {"lease_duration": lease_seconds},
        )
    )


async def release_lease(client: PrefectClient, lease: uuid.UUID) -> None:
    """Give a concurrency lease's slots back (raises httpx.HTTPStatusError on an error)."""
    _raise_for(
        await _lease_request(
            client, "/v2/concurrency_limits/decrement-with-lease", {"lease_id": str(lease)}
        )
    )


async def _try_acquire(
    client: PrefectClient,
    name: str,
    lease_seconds: float,
    slots: int = 1,
    *,
    check: _LimitCheck | None = None,
) -> tuple[bool, uuid.UUID | None]:
    """One attempt at `slots` slots of `name`: (granted, lease id); (False, None) when full.

    With `check`, the limit's first answer also settles the limit itself (see `_LimitCheck`).

    Raises:
        ProviderLimitMissingError: No limit of that name (and no `check` to create it).
        httpx.HTTPStatusError: Any other refusal (422: more slots asked than the limit has).
    """
    if check is not None and name not in check.settled:
        return await check.first_acquire(client, name, lease_seconds, slots)
    granted, limits, lease = _answer(await _increment(client, name, slots, lease_seconds))
    if granted and not limits:
        raise _missing(name)
    return granted, lease


def _answer(response: httpx.Response) -> tuple[bool, list[dict[str, object]], uuid.UUID | None]:
    """An increment's answer: (granted, the limits it names, lease id); full (423): (False, [],
    None). A name with no limit is granted a lease on nothing, naming no limit."""
    if response.status_code == 423:
        return False, [], None
    _raise_for(response)
    body = response.json()
    lease_id = body.get("lease_id")
    return True, body.get("limits") or [], uuid.UUID(str(lease_id)) if lease_id else None


class _LimitCheck:
    """Makes a run's first acquisition of each limit also ensure it (`ensure=True`).

    Reading the limit before every run cost the run one API round trip before its first
    request; the increment's answer already names the limit and its size. So, once per limit
    (`<name>`, `<name>:rate`) and `ProviderSlots`: a missing limit (the answer lists none) is
    created, a limit whose size differs from the block's is resized (a block edited in the UI),
    and a limit smaller than the slots asked for (the server's 422) is resized before asking
    again. The first acquisitions of a limit go one at a time until it is settled, so no
    request is granted on a size the block no longer has.

    What the answer does not show is a limit's slot decay: a limit given decay by hand is left
    as it is (`ensure_provider_limit` sets it back to none).
    """

    def __init__(self, limit: ProviderLimit) -> None:
        self._limit = limit
        #: Names of the limits already settled.
        self.settled: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def _size(self, name: str) -> int | None:
        if name == self._limit.name:
            return self._limit.max_in_flight
        return _window_of(self._limit)[0]

    async def _ensure_and_retry(
        self, client: PrefectClient, name: str, lease_seconds: float, slots: int
    ) -> tuple[bool, uuid.UUID | None]:
        await ensure_provider_limit(self._limit, client=client)
        self.settled.add(name)
        return await _try_acquire(client, name, lease_seconds, slots)

    async def first_acquire(
        self, client: PrefectClient, name: str, lease_seconds: float, slots: int
    ) -> tuple[bool, uuid.UUID | None]:
        """`_try_acquire` for a limit not settled yet: settles it from the answer."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name in self.settled:  # settled by the acquisition this one waited for
                return await _try_acquire(client, name, lease_seconds, slots)
            response = await _increment(client, name, slots, lease_seconds)
            if response.status_code == 422:  # more slots than the limit has: resize first
                return await self._ensure_and_retry(client, name, lease_seconds, slots)
            granted, limits, lease = _answer(response)
            if not granted:
                return False, None  # it exists and is full: settled by a later answer
            if not limits:  # missing; its lease holds nothing
                if lease is not None:
                    await release_lease(client, lease)
                return await self._ensure_and_retry(client, name, lease_seconds, slots)
            try:
                if any(entry.get("limit") != self._size(name) for entry in limits):
                    await ensure_provider_limit(self._limit, client=client)
            except BaseException:
                # The slots granted must not stay held until the lease expires.
                if lease is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(release_lease(client, lease))
                raise
            self.settled.add(name)
            return True, lease


async def _acquire(client: PrefectClient, name: str, lease_seconds: float) -> uuid.UUID | None:
    """Take one slot of the concurrency limit `name` under a lease, polling while it is full."""
    wait = FIRST_WAIT_S
    while True:
        granted, lease = await _try_acquire(client, name, lease_seconds)
        if granted:
            return lease
        # The server's Retry-After is an average occupancy; a slot frees whenever a holder
        # finishes, so poll soon (capped, jittered) instead.
        await asyncio.sleep(wait * random.uniform(0.8, 1.2))
        wait = min(wait * 2, MAX_WAIT_S)


@asynccontextmanager
async def provider_slot(
    source: AdGenerator | ProviderLimit, *, client: PrefectClient | None = None
) -> AsyncIterator[None]:
    """Hold one slot of a provider limit (and one rate start, if it is paced) for one request.

    For many requests of one run, `ProviderSlots` is cheaper (it reuses slots).

    Args:
        source: The generator block, or the provider limit, to draw from.
        client: An open Prefect client to reuse (one per flow run saves a connection per call).

    Raises:
        ProviderLimitMissingError: The limit was never created (a misnamed limit fails loudly).
    """
    limit = limit_of(source)
    async with _client(client) as api:
        lease = None
        if limit.max_in_flight:
            lease = await _acquire(api, limit.name, LEASE_SECONDS)
        try:
            if limit.per_second:
                _slots, window = _window_of(limit)
                rate = await _acquire(api, rate_limit_name(limit.name), RATE_LEASE_SECONDS)
                if rate is not None:
                    # The window starts now, as the request starts; a client opened here closes
                    # on exit, so the delayed release then opens its own.
                    _release_later(rate, window, client)
            yield
        finally:
            if lease is not None:
                # Shielded: a cancelled run must still hand its slot back.
                await asyncio.shield(release_lease(api, lease))


@asynccontextmanager
async def _client(client: PrefectClient | None) -> AsyncIterator[PrefectClient]:
    if client is not None:
        yield client
        return
    async with get_client() as fresh:
        yield fresh


@dataclass
class _RateSlot:
    lease: uuid.UUID | None
    since: float  # when the lease was taken or last renewed (monotonic)


class _RateWindows:
    """A run's slots of a provider's rate window, each reused for one start per window."""

    def __init__(
        self, client: PrefectClient, limit: ProviderLimit, check: _LimitCheck | None = None
    ) -> None:
        self._client = client
        self._check = check
        self._name = rate_limit_name(limit.name)
        _slots, self._window = _window_of(limit)
        self._free: list[_RateSlot] = []
        self._wanting = 0
        self._returned = asyncio.Event()
        self._closed = False
        self._timers: set[asyncio.Task[None]] = set()
        self._poll: asyncio.Task[None] | None = None
        self._backoff = FIRST_WAIT_S

    async def _renewed(self, slot: _RateSlot) -> bool:
        if slot.lease is None or time.monotonic() - slot.since < RATE_LEASE_SECONDS / 2:
            return True
        try:  # an old lease: renew it rather than risk it expiring while in use
            await renew_lease(self._client, slot.lease, RATE_LEASE_SECONDS)
        except httpx.HTTPStatusError:
            return False  # expired meanwhile: the server already freed it
        slot.since = time.monotonic()
        return True

    async def start(self) -> None:
        """Wait for the right to start one request now; its window is counted from now."""
        self._wanting += 1
        try:
            slot = await self._obtain()
        finally:
            self._wanting -= 1
        if not self._wanting and self._free:
            # Slots that came back while this one got a fresh one: nobody waits for them.
            idle, self._free = self._free, []
            for other in idle:
                await self._release(other)
        # Last, with nothing awaited after it: the window starts as the request does.
        self._schedule_return(slot)

    async def _obtain(self) -> _RateSlot:
        while True:
            while self._free:
                slot = self._free.pop()
                if await self._renewed(slot):
                    return slot
            # One server poll per run at a time, raced against this run's own slots coming
            # back: a slow API call never delays taking a slot whose window just ended.
            if self._poll is None:
                self._poll = asyncio.ensure_future(self._poll_server())
            poll = self._poll
            self._returned.clear()
            returned = asyncio.ensure_future(self._returned.wait())
            try:
                await asyncio.wait({poll, returned}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                returned.cancel()
            if poll.done() and not poll.cancelled() and poll.exception() is not None:
                raise poll.exception()  # type: ignore[misc]  # e.g. the limit does not exist

    async def _poll_server(self) -> None:
        """One attempt at a server slot (into `_free`), else back off before the next."""
        try:
            granted, lease = await _try_acquire(
                self._client, self._name, RATE_LEASE_SECONDS, check=self._check
            )
            if granted:
                self._backoff = FIRST_WAIT_S
                slot = _RateSlot(lease, time.monotonic())
                if self._wanting and not self._closed:
                    self._free.append(slot)
                    self._returned.set()
                else:  # everyone was served meanwhile; its window never started
                    await self._release(slot)
                return
            await asyncio.sleep(self._backoff * random.uniform(0.8, 1.2))
            self._backoff = min(self._backoff * 2, MAX_WAIT_S)
        finally:
            self._poll = None

    def _schedule_return(self, slot: _RateSlot) -> None:
        async def back() -> None:
            await asyncio.sleep(self._window)
            if self._wanting and not self._closed:
                self._free.append(slot)
                self._returned.set()
            else:
                await self._release(slot)

        timer = asyncio.ensure_future(back())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _release(self, slot: _RateSlot) -> None:
        if slot.lease is not None:
            await asyncio.shield(release_lease(self._client, slot.lease))

    async def close(self) -> None:
        """Hand every slot back once its window has ended (waits up to one window)."""
        self._closed = True
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        if self._timers:
            await asyncio.gather(*list(self._timers), return_exceptions=True)
        idle, self._free = self._free, []
        for slot in idle:
            await self._release(slot)


class ProviderSlots:
    """The provider-limit slots of one run, handed from request to request.

    Concurrency: at the start the run may ask for a whole first wave of slots in one call
    (`prime`); every finished request hands its slot to the run's next waiting request instead
    of releasing it. Slots of single leases go back to the server as soon as the run has no more
    waiting requests; the primed lease (one lease for several slots) goes back when all of its
    slots are idle. Rate: see `_RateWindows` (a slot reused once per window while the run has
    requests waiting).

    Args:
        source: The generator block, or the provider limit, to draw from.
        client: An open Prefect client, used for every call.
        requests: How many requests this run will make (None: unknown; slots then go back as
            soon as no request of the run waits for one).
        ensure: Create the limit if it is missing, and resize it if the block's size changed,
            from the first acquisition's answer (no API call of its own). Without it, a
            missing limit raises `ProviderLimitMissingError`.

    Example:
        ```python
        async with get_client() as client, ProviderSlots(gen, client, requests=24) as slots:
            await slots.prime(8)
            async with slots.slot():
                image = await gen.generate(request)
        ```
    """

    def __init__(
        self,
        source: AdGenerator | ProviderLimit,
        client: PrefectClient,
        *,
        requests: int | None = None,
        ensure: bool = False,
    ) -> None:
        self._limit = limit_of(source)
        self._client = client
        # One check for both limits: ensuring creates or resizes the pair.
        self._check = _LimitCheck(self._limit) if ensure else None
        self._counted = requests is not None
        self._unfinished = requests or 0
        self._holding = 0
        self._waiting = 0
        self._idle: list[tuple[uuid.UUID, float]] = []  # single leases: (id, acquired/renewed)
        self._bulk: uuid.UUID | None = None
        self._bulk_size = 0
        self._bulk_free = 0
        self._bulk_since = 0.0
        self._rate = (
            _RateWindows(client, self._limit, self._check) if self._limit.per_second else None
        )
        self._handed_back = asyncio.Event()
        #: Leases being handed back in the background (awaited on exit).
        self._releasing: set[asyncio.Task[None]] = set()
        #: `prime` started by `prime_soon`, awaited by the first requests and on exit.
        self._priming: asyncio.Future[int] | None = None

    @property
    def limit(self) -> ProviderLimit:
        """The provider limit these slots draw from."""
        return self._limit

    async def __aenter__(self) -> ProviderSlots:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Hand every slot back (the run's requests are over). Safe to call again."""
        if self._priming is not None:
            # Its lease, if it was granted, is handed back with the others below.
            await asyncio.gather(self._priming, return_exceptions=True)
        if self._rate is not None:
            await self._rate.close()
        await drain_rate_releases()
        leases = [lease for lease, _ in self._idle]
        if self._bulk is not None:
            leases.append(self._bulk)
        self._idle, self._bulk, self._bulk_free = [], None, 0
        if self._releasing:
            await asyncio.gather(*list(self._releasing), return_exceptions=True)
        await asyncio.shield(self._release_all(leases))

    async def _release_all(self, leases: list[uuid.UUID]) -> None:
        for lease in leases:
            await release_lease(self._client, lease)

    def _release_soon(self, lease: uuid.UUID) -> None:
        """Hand a lease back without holding up the request that ends with it (the run's last
        request would otherwise wait one API round trip before its ad is stored)."""

        async def release() -> None:
            try:
                await release_lease(self._client, lease)
            except Exception as exc:  # the server frees it when its lease expires
                logger.warning("could not hand back lease %s (%s)", lease, type(exc).__name__)

        task = asyncio.ensure_future(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def prime(self, slots: int) -> int:
        """Take up to `slots` slots in one call, if that many are free now; returns how many."""
        if not self._limit.max_in_flight:
            return 0
        slots = min(slots, self._limit.max_in_flight, self._unfinished)
        if slots < 2:
            return 0
        granted, lease = await _try_acquire(
            self._client, self._limit.name, LEASE_SECONDS, slots, check=self._check
        )
        if not granted or lease is None:  # not that many free: go one by one
            return 0
        self._bulk = lease
        self._bulk_size = self._bulk_free = slots
        self._bulk_since = time.monotonic()
        return slots

    def prime_soon(self, slots: int) -> None:
        """Start `prime(slots)` without waiting for it: the first requests wait for its answer
        when they ask for a slot, so what they do before (their task runs starting, their
        templates read) overlaps the API round trip. A failure of the call is raised to them."""
        self._priming = asyncio.ensure_future(self.prime(slots))

    def expect(self, requests: int) -> None:
        """Set how many requests the run will make, before its first one (the slots were
        opened on an estimate, e.g. before the run's templates were claimed)."""
        self._counted = True
        self._unfinished = requests

    def done(self, requests: int = 1) -> None:
        """Count `requests` of this run as finished (made, or given up on)."""
        self._unfinished -= requests

    async def _renewed(self, lease: uuid.UUID, since: float) -> bool:
        if time.monotonic() - since < LEASE_SECONDS / 2:
            return True
        try:  # an old lease: renew it rather than risk it expiring mid-request
            await renew_lease(self._client, lease, LEASE_SECONDS)
            return True
        except httpx.HTTPStatusError:
            return False  # expired meanwhile: the server already freed it

    async def _take(self) -> tuple[str, uuid.UUID | None]:
        if self._priming is not None:
            await asyncio.shield(self._priming)  # shared by every waiter: not cancelled by one
        wait = FIRST_WAIT_S
        while True:
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
            granted, fresh = await _try_acquire(
                self._client, self._limit.name, LEASE_SECONDS, check=self._check
            )
            if granted:
                return "single", fresh
            if self._idle or (self._bulk is not None and self._bulk_free > 0):
                continue  # handed back by this run's own request meanwhile
            # Wake as soon as a request of this run hands a slot back, else poll again: a slot
            # parked in `_idle` while its waiter polls the server would be held by nobody.
            self._handed_back.clear()
            try:
                await asyncio.wait_for(
                    self._handed_back.wait(), timeout=wait * random.uniform(0.8, 1.2)
                )
            except TimeoutError:
                wait = min(wait * 2, MAX_WAIT_S)

    def _others_waiting(self) -> bool:
        """Whether another request of this run will want a concurrency slot."""
        if self._counted:
            return self._unfinished - self._holding - 1 > 0
        return self._waiting > 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot (and one rate start, when paced) for one provider request."""
        kind, lease = "none", None
        if self._limit.max_in_flight:
            self._waiting += 1
            try:
                kind, lease = await self._take()
            finally:
                self._waiting -= 1
        self._holding += 1
        try:
            if self._rate is not None:
                # After the concurrency slot: the window starts as the request is sent.
                await self._rate.start()
            yield
        finally:
            self._holding -= 1
            if kind == "bulk":
                self._bulk_free += 1
                self._handed_back.set()
                if not self._others_waiting() and self._bulk_free == self._bulk_size and self._bulk:
                    bulk, self._bulk, self._bulk_free = self._bulk, None, 0
                    self._release_soon(bulk)
            elif lease is not None:
                if self._others_waiting():
                    self._idle.append((lease, time.monotonic()))
                    self._handed_back.set()
                else:
                    self._release_soon(lease)
