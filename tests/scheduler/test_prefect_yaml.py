"""`prefect --no-prompt deploy --all` deploys prefect.yaml non-interactively (as CI does), job
deployments then copy *where* from the base deployment it created, and a job registered after it
runs on a process worker started outside the image (the README's local setup)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from blocks.storage import default_storage
from config import get_settings
from config.settings import PROJECT_ROOT
from flows import deployment_sync as dep
from flows.sample_data import seed_sample_data
from scheduler.pull_steps import CODE_DIR_ENV, set_code_directory
from scheduler.sdk import AdScheduler
from tests.scheduler.conftest import Catalog, recurring_spec
from tests.support.prefect_server import deploy_project
from tests.support.production import wait_for_flow_run, worker_process

PULL = [{"scheduler.pull_steps.set_code_directory": {}}]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # deploying once is enough
async def test_prefect_deploy_all_in_ci(
    prefect_api: str, catalog: Catalog, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy_project(prefect_api, timeout=120)

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

    # The README's local setup: a process worker on the pool, started from anywhere, runs a job
    # registered after the deploy (the fixed image path crashed every run before its flow).
    monkeypatch.setenv("DATABASE_URL", catalog.db_url)
    get_settings.cache_clear()
    _brand, product, _ = await seed_sample_data(catalog.tenant_id, default_storage(), templates=1)
    async with AdScheduler(catalog.tenant_id, database_url=catalog.db_url) as ads:
        local = await ads.create(
            recurring_spec(
                catalog,
                product_id=str(product.id),
                templates={"mode": "unused", "count": 1},
                ad={"variations": 1},
            )
        )
        flow_run_id = await ads.run_now(local.id)
    env = {"PREFECT_API_URL": prefect_api, "DATABASE_URL": catalog.db_url}
    env["AD_SCHEDULER_DATA_DIR"] = str(data_dir)
    with worker_process(dep.DEFAULT_WORK_POOL, data_dir / "worker-home", env) as (_, log):
        run = await wait_for_flow_run(flow_run_id, log=log)
    assert run.state_name == "Completed", log.read_text()[-6000:]
    async with AdScheduler(catalog.tenant_id, database_url=catalog.db_url) as ads:
        [row] = await ads.runs(local.id)
    assert (row.status, row.templates_used) == ("completed", ["sample-01.png"])


def test_pull_step_goes_to_the_installed_code_or_the_configured_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a process worker starts each flow in a temporary folder
    monkeypatch.delenv(CODE_DIR_ENV, raising=False)
    assert set_code_directory() == {"directory": str(PROJECT_ROOT)}
    assert Path.cwd() == PROJECT_ROOT

    elsewhere = tmp_path / "ad-scheduler"
    (elsewhere / "flows").mkdir(parents=True)
    monkeypatch.setenv(CODE_DIR_ENV, str(elsewhere))
    assert set_code_directory() == {"directory": str(elsewhere)}
    assert Path.cwd() == elsewhere

    monkeypatch.setenv(CODE_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=f"no ad-scheduler code in .*set {CODE_DIR_ENV}"):
        set_code_directory()
    assert Path.cwd() == elsewhere  # nothing changed


def test_image_installs_the_code_where_the_pull_step_finds_it() -> None:
    # The image installs the package editable from its WORKDIR, so `config` (PROJECT_ROOT, the
    # pull step's default) resolves to /opt/prefect/ad-scheduler there.
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "WORKDIR /opt/prefect/ad-scheduler" in dockerfile
    assert "uv pip install --system --compile-bytecode --no-deps -e ." in dockerfile
    assert "COPY scheduler ./scheduler" in dockerfile and "COPY config ./config" in dockerfile
