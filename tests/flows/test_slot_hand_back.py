"""A scheduled run hands its provider slots back after its body, and its final-state hook waits.

A run's last `decrement-with-lease` starts when its last request ends; a scheduled run's end no
longer waits for it (`provider_slots_ahead(after_run=True)`), its final-state hook does
(`slots_handed_back`). Real Prefect server, real global concurrency limits and leases.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, cast

import pytest
from prefect.client.orchestration import get_client

from blocks.generators.local import LocalAdRenderer
from domain.params import AdParameters, JobParameters
from flows import limits
from flows.limits import hand_back_later, slots_handed_back
from flows.pipeline import RunInputs, provider_slots_ahead
from flows.scheduled_job import run_scheduled_job
from tests.flows.support import job_with_templates

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


async def _active(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(name)).active_slots


async def _inputs(name: str) -> RunInputs:
    generator = LocalAdRenderer(provider_limit=name, max_in_flight=2)
    none = cast(Any, None)  # what the slots do not use
    return RunInputs(generator=generator, storage=none, brief=none, product=none)


async def test_after_run_the_exit_does_not_wait_for_the_last_release_and_the_hook_does() -> None:
    name = f"hand-back-{uuid.uuid4().hex[:8]}"
    async with provider_slots_ahead(_inputs(name), requests=1, concurrency=1, after_run=True) as (
        opening
    ):
        slots = await opening
        slots.expect(1)
        async with slots.slot():
            assert await _active(name) == 1
        # The run's last request ended: its lease is on its way back (`_release_soon`).
    # The exit returned with the hand-back still running (it waits for that release).
    assert limits._handing_back
    await slots_handed_back()
    assert not limits._handing_back
    assert await _active(name) == 0


async def test_on_an_exception_the_slots_are_handed_back_before_it_propagates() -> None:
    name = f"hand-back-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError, match="the run failed"):
        async with provider_slots_ahead(
            _inputs(name), requests=2, concurrency=2, after_run=True
        ) as opening:
            slots = await opening
            slots.expect(2)
            async with slots.slot():
                assert await _active(name) >= 1
                raise RuntimeError("the run failed")
    assert not limits._handing_back
    assert await _active(name) == 0


async def test_a_scheduled_run_leaves_no_slot_held_and_no_hand_back_pending(tenant_id) -> None:
    name = f"hand-back-{uuid.uuid4().hex[:8]}"
    block = f"hand-back-{uuid.uuid4().hex[:8]}"
    # Paced at one request a second: the run's rate slot comes back as its window ends, ~1 s
    # after the request started, long after the body ends: the hand-back outlives the body
    # and every other final-state step, and only the hook's wait makes the flow call see it done.
    await LocalAdRenderer(provider_limit=name, max_in_flight=2, requests_per_minute=60).asave(block)
    params = JobParameters(ad=AdParameters(variations=1, generator_block=block))
    job = await job_with_templates(
        tenant_id, templates=1, template_count=1, parameters=params.model_dump(mode="json")
    )
    state = await run_scheduled_job(job.id, return_state=True)
    assert state.is_completed(), state.message
    # The flow call returns once its final-state hook has run: it waited for the hand-back.
    assert not limits._handing_back
    assert await _active(name) == 0
    assert await _active(f"{name}:rate") == 0


async def test_slots_handed_back_logs_a_failed_hand_back_and_waits_for_late_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        hand_back_later(later())  # started while the first is being waited for
        done.append("slow")

    async def later() -> None:
        await asyncio.sleep(0.05)
        done.append("later")

    async def failing() -> None:
        raise RuntimeError("decrement-with-lease answered 503")

    hand_back_later(slow())
    hand_back_later(failing())
    with caplog.at_level(logging.WARNING, logger="flows.limits"):
        await slots_handed_back()  # never raises
    assert done == ["slow", "later"]
    assert not limits._handing_back
    assert "provider slots not handed back (RuntimeError)" in caplog.text
