"""Execute one existing flow run of run-scheduled-job in this process (a worker's subprocess)."""

import asyncio
import sys
import uuid

from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow_async

from flows.scheduled_job import run_scheduled_job


async def main(flow_run_id: str) -> None:
    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(flow_run_id))
    await run_flow_async(run_scheduled_job, flow_run=flow_run, parameters=flow_run.parameters)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
