"""A flow run's task runs as the Prefect server has recorded them.

Prefect's task-run recorder writes task-run states from the events flow runs send, in batches
flushed at least every second on the servers we start (`scheduler.local_prefect.TUNED_SERVER_ENV`):
a run's task runs reach the API up to about a second after the run has ended, as in production.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun


async def final_task_runs(
    flow_run_id: uuid.UUID, *, at_least: int, timeout_s: float = 60
) -> list[TaskRun]:
    """The task runs of `flow_run_id` once the server has at least `at_least` of them, every one
    in a final state. Raises AssertionError naming what it last saw after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    runs: list[TaskRun] = []
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if len(runs) >= at_least and all(r.state and r.state.is_final() for r in runs):
                return runs
            if time.monotonic() > deadline:
                seen = sorted(f"{r.name}: {r.state.name if r.state else None}" for r in runs)
                raise AssertionError(
                    f"the server never had {at_least} final task runs of {flow_run_id}: {seen}"
                )
            await asyncio.sleep(0.2)  # polling the server for a condition, with a deadline
