"""`prefect --no-prompt deploy --all` deploys prefect.yaml non-interactively (as CI does), and
job deployments then copy *where* from the base deployment it created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from config.settings import PROJECT_ROOT
from scheduler import deployments as dep
from scheduler.sdk import AdScheduler
from tests.scheduler.conftest import Catalog, recurring_spec

PULL = [
    {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect/ad-scheduler"}}
]


def _prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # deploying once is enough
async def test_prefect_deploy_all_in_ci(prefect_api: str, catalog: Catalog, data_dir: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_CLI_PROMPT": "false"}
    pool = _prefect(
        "work-pool", "create", dep.DEFAULT_WORK_POOL, "--type", "process", "--overwrite", env=env
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deployed = _prefect("--no-prompt", "deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    async with get_client() as client:
        base = await client.read_deployment_by_name("run-scheduled-job/ad-scheduler")
        create_ads = await client.read_deployment_by_name("create-ads/ad-scheduler")
        reconcile = await client.read_deployment_by_name("reconcile-job-runs/ad-scheduler")
        [every_5] = await client.read_deployment_schedules(reconcile.id)
    for d in (base, create_ads, reconcile):
        assert d.work_pool_name == dep.DEFAULT_WORK_POOL and d.pull_steps == PULL
    assert base.entrypoint == dep.ENTRYPOINT
    assert every_5.schedule.interval.total_seconds() == 300 and every_5.active
    assert create_ads.parameter_openapi_schema is not None
    assert "product_id" in create_ads.parameter_openapi_schema["properties"]

    # The SDK now copies where job deployments run from the base deployment.
    async with AdScheduler(catalog.tenant_id, database_url=catalog.db_url) as ads:
        job = await ads.create(recurring_spec(catalog))
    assert job.prefect_deployment_id is not None
    async with get_client() as client:
        d = await client.read_deployment(job.prefect_deployment_id)
    assert d.pull_steps == PULL and d.work_pool_name == dep.DEFAULT_WORK_POOL
