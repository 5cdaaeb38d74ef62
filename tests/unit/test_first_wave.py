"""`RunResources.slot`: the run's first wave of provider requests, and what waits for it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from flows.limits import ProviderLimit, ProviderSlots
from flows.pipeline import RunResources


def _resources(first_wave: int, calls: list[int]) -> RunResources:
    # A limit without a cap or a pace: slots are granted at once, with no API call.
    slots = ProviderSlots(ProviderLimit(name="unlimited"), cast(Any, None))
    return RunResources(
        brief=cast(Any, None),
        image_paths=[],
        generator=cast(Any, None),
        storage=cast(Any, None),
        slots=slots,
        generating=asyncio.Semaphore(first_wave),
        open_runs=asyncio.Semaphore(2 * first_wave),
        on_first_wave=lambda: calls.append(len(calls)),
        first_wave=first_wave,
    )


async def test_the_first_wave_callback_runs_once_when_the_whole_wave_holds_its_slots() -> None:
    calls: list[int] = []
    res = _resources(3, calls)
    held, all_in = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def request() -> None:
        async with res.slot():
            seen.append(len(calls))
            if len(seen) == 3:
                all_in.set()
            await held.wait()

    wave = [asyncio.ensure_future(request()) for _ in range(3)]
    await all_in.wait()
    # Called by the third request, not before: the first two saw no call yet.
    assert seen == [0, 0, 1] and calls == [0]
    held.set()
    await asyncio.gather(*wave)
    assert res.in_flight == 0
    async with res.slot():  # a later wave calls nothing more
        pass
    assert calls == [0]


async def test_a_wave_that_never_fills_does_not_call_it() -> None:
    calls: list[int] = []
    res = _resources(3, calls)
    for _ in range(5):  # one request at a time: never three at once
        async with res.slot():
            pass
    assert calls == [] and res.in_flight == 0
