"""A flow run's task runs as the Prefect server has recorded them.

Prefect's task-run recorder writes task-run states from the events flow runs send, in batches
flushed at least every `PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL` seconds on the
servers we start (`scheduler.local_prefect.TUNED_SERVER_ENV`): a run's task runs reach the API up
to about that long (plus the write) after the run has ended, as in production.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun

from scheduler.local_prefect import TUNED_SERVER_ENV

#: Longer than one flush of the recorder: what a run sent before a read is written by the next.
SETTLE_S = float(TUNED_SERVER_ENV["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"]) + 0.5


def _settled(runs: list[TaskRun]) -> tuple[tuple[str, str | None], ...]:
    return tuple(sorted((str(r.id), r.state.type.value if r.state else None) for r in runs))


async def final_task_runs(
    flow_run_id: uuid.UUID, *, at_least: int, timeout_s: float = 60
) -> list[TaskRun]:
    """The task runs of `flow_run_id` once the server has at least `at_least` of them, every one
    in a final state, and a read one recorder flush later (`SETTLE_S`) finds the same: a task run
    whose events were still in the recorder's batch at the first read is in the second.

    Raises AssertionError naming what it last saw after `timeout_s` seconds.
    """
    deadline = time.monotonic() + timeout_s
    candidate: tuple[tuple[str, str | None], ...] | None = None
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            complete = len(runs) >= at_least and all(r.state and r.state.is_final() for r in runs)
            if complete and candidate == _settled(runs):
                return runs
            if time.monotonic() > deadline:
                seen = sorted(f"{r.name}: {r.state.name if r.state else None}" for r in runs)
                raise AssertionError(
                    f"the server never had {at_least} final task runs of {flow_run_id}: {seen}"
                )
            candidate = _settled(runs) if complete else None
            # Polling the server for a condition, with a deadline; once it holds, one recorder
            # flush later for the confirming read.
            await asyncio.sleep(SETTLE_S if complete else 0.2)
