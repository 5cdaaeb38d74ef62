"""`prefect deploy --all` deploys the job forms from prefect.yaml with their parameter schema (what
the Prefect UI renders), Prefect refuses a run whose form is out of range, and a process worker
runs a form: a good one saves the job, a bad one fails naming the field."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client

from flows import deployment_sync as dep
from tests.scheduler.conftest import Catalog, tenant_jobs
from tests.support.prefect_server import deploy_project
from tests.support.production import wait_for_flow_run, wait_for_worker, worker_process

FORMS = ("save-job", "pause-job", "resume-job", "delete-job", "run-job-now")


# Deploys with the CLI and starts processes: minutes on a loaded shared machine.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_prefect_yaml_deploys_the_forms_and_a_worker_runs_them(
    prefect_api: str, catalog: Catalog, data_dir: Path, tmp_path: Path
) -> None:
    deploy_project(prefect_api, timeout=300)

    async with get_client() as client:
        forms = {n: await client.read_deployment_by_name(f"{n}/ad-scheduler") for n in FORMS}
        watcher = await client.read_deployment_by_name("sync-ui-changes/ad-scheduler")
        [every_10] = await client.read_deployment_schedules(watcher.id)
    assert every_10.active and every_10.schedule.interval.total_seconds() == 600
    assert watcher.global_concurrency_limit and watcher.global_concurrency_limit.limit == 1
    for form in forms.values():
        assert form.enforce_parameter_schema and form.work_pool_name == dep.DEFAULT_WORK_POOL
    # The schema the UI renders, as the API serves it.
    async with httpx.AsyncClient(base_url=prefect_api, timeout=30) as http:
        served = (await http.get(f"/deployments/{forms['save-job'].id}")).json()
        schema = served["parameter_openapi_schema"]
        defs = schema["definitions"]
        assert schema["properties"]["job"]["$ref"] == "#/definitions/JobForm"
        assert "Europe/Berlin" in defs["ScheduleForm"]["properties"]["timezone"]["enum"]
        assert defs["ExportForm"]["properties"]["destination"]["enum"] == [
            "none",
            "email",
            "slack",
            "both",
        ]
        assert defs["JobForm"]["properties"]["product"]["description"]
        # A value outside the form's choices is refused by Prefect itself: no run is created.
        bad = {"job": {"name": "x", "product": "p", "overlap": "sometimes"}}
        refused = await http.post(
            f"/deployments/{forms['save-job'].id}/create_flow_run", json={"parameters": bad}
        )
        assert refused.status_code in (409, 422), refused.text
        assert "overlap" in refused.text or "sometimes" in refused.text

    good: dict[str, Any] = {
        "name": f"From the form {uuid.uuid4().hex[:6]}",
        "product": catalog.product.name,
        "schedule": {"type": "recurring", "cron": "15 8 * * *", "timezone": "Europe/Berlin"},
        "templates": {"mode": "unused", "count": 1},
    }
    worker_env = {
        "PREFECT_API_URL": prefect_api,
        "DATABASE_URL": catalog.db_url,
        "AD_SCHEDULER_TENANT_ID": str(catalog.tenant_id),
        "AD_SCHEDULER_DATA_DIR": str(data_dir),
    }
    with worker_process(dep.DEFAULT_WORK_POOL, tmp_path, worker_env) as (proc, log):
        await wait_for_worker(dep.DEFAULT_WORK_POOL, proc, log)
        async with get_client() as client:
            ok = await client.create_flow_run_from_deployment(
                forms["save-job"].id, parameters={"job": good}
            )
            bad_cron = await client.create_flow_run_from_deployment(
                forms["save-job"].id,
                parameters={"job": {**good, "name": "never", "schedule": {"cron": "0 0 31 2 *"}}},
            )
        done = await wait_for_flow_run(ok.id, log=log)
        failed = await wait_for_flow_run(bad_cron.id, log=log)
    assert done.state is not None and done.state.is_completed(), log.read_text()[-4000:]
    assert failed.state is not None and failed.state.is_failed()
    assert "schedule.cron: '0 0 31 2 *' never fires" in (failed.state.message or "")
    [job] = await tenant_jobs(catalog.db_url, catalog.tenant_id)
    assert (job.name, job.cron_expression, job.timezone) == (
        good["name"],
        "15 8 * * *",
        "Europe/Berlin",
    )
