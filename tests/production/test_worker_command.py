"""`ad-scheduler worker`, as a worker host runs it: a job's run forked from its fork server.

The command is started as a service manager would (its own session, output to a file standing
for the journal), with only the production variables (`worker_environment`) on a pool it creates
itself. A job registered through the SDK runs on it; its engine must come from the fork server
(the server's line naming the run is in the command's output), and SIGTERM must stop the worker
and the fork server, and end the command with status 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks.generators.http_service import HttpAdGenerator
from flows.deployment_sync import engine_command
from flows.sample_data import seed_sample_data
from scheduler.local_prefect import TUNED_WORKER_ENV, prefect_env
from scheduler.sdk import AdScheduler
from tests.support.http_fake import SERVICE_TOKEN, FakeServer, running, service_default
from tests.support.production import (
    NO_BASE,
    ProductionWorker,
    run_now_spec,
    wait_for_flow_run,
    wait_for_worker,
    worker_environment,
)

pytestmark = pytest.mark.postgres


def test_a_bad_limit_is_refused_before_anything_starts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "worker", "--limit", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result
    assert "--limit 0 is out of range; allowed: 1 or more" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_the_worker_command_forks_runs_and_stops_on_sigterm(
    production_settings: ProductionWorker, tmp_path: Path
) -> None:
    worker = production_settings
    tenant = uuid.uuid4()
    suffix = uuid.uuid4().hex[:8]
    pool = f"worker-cmd-{suffix}"
    _brand, product, _ = await seed_sample_data(tenant, worker.storage, templates=2)
    env = prefect_env(
        tmp_path,
        extra={
            **TUNED_WORKER_ENV,
            **worker_environment(
                worker.api_url, worker.database_block, worker.storage_block, tmp_path / "data"
            ),
        },
    )
    out = tmp_path / "journal.log"
    with running(FakeServer(service_default())) as service, out.open("wb") as journal:
        await HttpAdGenerator(
            url=f"{service.url}/ads",
            auth_token=SecretStr(SERVICE_TOKEN),
            provider_limit=f"worker-cmd-{suffix}",
        ).asave(f"worker-cmd-{suffix}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "worker", "--pool", pool, "--limit", "2"],
            env=env,
            cwd=tmp_path,
            stdout=journal,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await wait_for_worker(pool, proc, out)
            async with get_client() as client:
                created = await client.read_work_pool(pool)
            command = created.base_job_template["variables"]["properties"]["command"]["default"]
            assert command == engine_command()
            async with AdScheduler(
                tenant, database_url=worker.database_url, base_deployment=NO_BASE, work_pool=pool
            ) as ads:
                job = await ads.create(
                    run_now_spec(
                        "worker-command", product.id, f"http-ad-generator/worker-cmd-{suffix}", 2
                    )
                )
                flow_run_id = await ads.run_now(job.id)
            final = await wait_for_flow_run(flow_run_id, log=out)
            assert final.state_name == "Completed", out.read_text()[-6000:]
            text = out.read_text(errors="replace")
            assert re.search(rf"forked flow-run process \d+ for {flow_run_id}", text), text[-6000:]
            pids = re.search(r"worker pid (\d+) on pool .*, fork server pid (\d+)", text)
            assert pids, text[-4000:]
            children = [int(p) for p in pids.groups()]

            proc.send_signal(signal.SIGTERM)  # a service manager's stop
            assert await asyncio.to_thread(proc.wait, 60) == 0, out.read_text()[-4000:]
            for pid in children:
                assert not Path(f"/proc/{pid}").exists() or _zombie(pid), out.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert "SIGTERM: stopping the worker, then the fork server" in out.read_text()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
