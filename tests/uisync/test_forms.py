"""The job forms (scheduler/forms.py) run as real flow runs on a real Prefect server and a real
database: they manage jobs exactly as the SDK does, and refuse bad input with its messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.states import State

from config import get_settings
from domain.errors import InvalidJobSpec
from scheduler import forms
from scheduler.sdk import AdScheduler
from tests.scheduler.conftest import Catalog, tenant_deployments, tenant_jobs


@pytest.fixture
def form_tenant(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> Iterator[uuid.UUID]:
    """The forms act for the catalog's tenant, on its database (as a worker's settings would)."""
    monkeypatch.setenv("AD_SCHEDULER_TENANT_ID", str(catalog.tenant_id))
    monkeypatch.setenv("DATABASE_URL", catalog.db_url)
    monkeypatch.setenv("AD_SCHEDULER_WORK_POOL", "ad-scheduler-process")
    monkeypatch.setenv("AD_SCHEDULER_BASE_DEPLOYMENT", "no-such-base")
    get_settings.cache_clear()
    yield catalog.tenant_id
    get_settings.cache_clear()


def job_form(catalog: Catalog, **overrides: Any) -> forms.JobForm:
    data: dict[str, Any] = {
        "name": f"Form job {uuid.uuid4().hex[:6]}",
        "product": catalog.product.name,
        "schedule": {"type": "recurring", "cron": "0 9 * * 1", "timezone": "America/New_York"},
        "templates": {"mode": "unused", "count": 2},
        "max_runs": 8,
    }
    data.update(overrides)
    return forms.JobForm.model_validate(data)


async def _state(call: Any) -> State:
    state: State = await call
    return state


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_forms_create_update_pause_resume_run_and_delete_a_job(
    prefect_api: str, catalog: Catalog, form_tenant: uuid.UUID, data_dir: Any
) -> None:
    form = job_form(catalog)
    created = await forms.save_job(job=form, return_state=True)
    assert created.is_completed(), created.message
    [job] = [j for j in await tenant_jobs(catalog.db_url, catalog.tenant_id) if j.name == form.name]
    assert (job.product_id, job.cron_expression, job.timezone) == (
        catalog.product.id,
        "0 9 * * 1",
        "America/New_York",
    )
    assert job.template_count == 2 and job.max_runs == 8 and job.prefect_deployment_id

    # Saving the same name updates that job (same row, same deployment).
    updated = await forms.save_job(
        job=job_form(catalog, name=form.name, max_runs=5, overlap="queue"), return_state=True
    )
    assert updated.is_completed(), updated.message
    [again] = [
        j for j in await tenant_jobs(catalog.db_url, catalog.tenant_id) if j.name == form.name
    ]
    assert again.id == job.id and again.max_runs == 5 and again.overlap_policy == "queue"
    assert again.prefect_deployment_id == job.prefect_deployment_id

    paused = await forms.pause_job(job=form.name, note="holiday freeze", return_state=True)
    assert paused.is_completed(), paused.message
    async with AdScheduler(catalog.tenant_id, database_url=catalog.db_url) as ads:
        row = await ads.get(job.id)
        assert (row.status, row.pause_note) == ("paused", "holiday freeze")
        async with get_client() as client:
            assert (await client.read_deployment(job.prefect_deployment_id)).paused is True

        resumed = await forms.resume_job(job=str(job.id), return_state=True)
        assert resumed.is_completed(), resumed.message
        assert (await ads.get(job.id)).status == "active"

        ran = await forms.run_job_now(job=form.name, return_state=True)
        assert ran.is_completed(), ran.message
        flow_run_id = uuid.UUID(str(await ran.result()))
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
        assert run.deployment_id == job.prefect_deployment_id and "manual" in run.tags

        refused = await forms.delete_job(job=form.name, return_state=True)
        assert refused.is_failed() and "confirm" in (refused.message or "")
        assert (await ads.get(job.id)).deleted_at is None

        deleted = await forms.delete_job(job=form.name, confirm=True, return_state=True)
        assert deleted.is_completed(), deleted.message
        assert (await ads.history_job(job.id)).deleted_at is not None
    async with get_client() as client:
        gone = await client.read_deployments(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[job.prefect_deployment_id])
            )
        )
    assert gone == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"schedule": {"cron": "0 0 31 2 *"}}, "schedule.cron"),
        ({"schedule": {"cron": "0 9 * * 1", "timezone": "Mars/Olympus"}}, "schedule.timezone"),
        ({"templates": {"mode": "unused", "count": 40}}, "templates.count"),
        ({"export": {"destination": "email", "email_recipients": ["not-an-address"]}}, None),
        (
            {
                "export": {
                    "destination": "email",
                    "email_recipients": ["a@example.com"],
                    "email_block": "no-such-block",
                }
            },
            "export.email_block",
        ),
        ({"misfire_grace_seconds": 5}, "misfire_grace_seconds"),
    ],
)
async def test_a_bad_field_fails_the_run_with_the_sdks_message_and_writes_nothing(
    prefect_api: str,
    catalog: Catalog,
    form_tenant: uuid.UUID,
    data_dir: Any,
    overrides: dict[str, Any],
    field: str | None,
) -> None:
    form = job_form(catalog, **overrides)
    state = await forms.save_job(job=form, return_state=True)
    assert state.is_failed()

    # The SDK, given the same job, refuses it with the same message.
    async with AdScheduler(catalog.tenant_id, database_url=catalog.db_url) as ads:
        with pytest.raises(InvalidJobSpec) as refused:
            await ads.apply(form.to_spec(catalog.product.id))
    assert state.message == str(refused.value)
    if field is not None:
        assert field in refused.value.fields
    assert await tenant_jobs(catalog.db_url, catalog.tenant_id) == []
    assert await tenant_deployments(catalog.tenant_id) == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_an_unknown_product_or_job_is_named(
    prefect_api: str, catalog: Catalog, form_tenant: uuid.UUID, data_dir: Any
) -> None:
    state = await forms.save_job(
        job=job_form(catalog, product="No such product"), return_state=True
    )
    assert state.is_failed()
    assert "product: no product 'No such product'" in (state.message or "")
    assert catalog.product.name in (state.message or "")  # what is allowed
    for flow_fn in (forms.pause_job, forms.resume_job, forms.run_job_now):
        missing = await flow_fn(job="no-such-job", return_state=True)
        assert missing.is_failed() and "no-such-job" in (missing.message or "")
    assert await tenant_jobs(catalog.db_url, catalog.tenant_id) == []


def test_the_job_form_offers_every_choice_as_a_dropdown() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(forms.save_job.fn).model_dump()
    defs = schema["definitions"]
    assert defs["ScheduleForm"]["properties"]["type"]["enum"] == ["recurring", "one_time"]
    zones = defs["ScheduleForm"]["properties"]["timezone"]["enum"]
    assert zones[0] == "UTC" and "Europe/Berlin" in zones and "localtime" not in zones
    assert defs["TemplatesForm"]["properties"]["when_exhausted"]["enum"] == [
        "recycle",
        "skip",
        "fail",
    ]
    assert defs["AdForm"]["properties"]["content_source"]["enum"] == [
        "hooks",
        "benefits",
        "recreate_template",
    ]
    assert defs["ExportForm"]["properties"]["destination"]["enum"] == [
        "none",
        "email",
        "slack",
        "both",
    ]
    assert defs["JobForm"]["properties"]["overlap"]["enum"] == ["skip", "queue"]
    for name, model in defs.items():
        for prop, body in model["properties"].items():
            ref = body.get("$ref", "").rpartition("/")[2]
            described = body.get("description") or (ref and defs[ref].get("description"))
            assert described, f"{name}.{prop} has no description"
    # No secret is ever typed into a form (run parameters are shown in the UI).
    assert "slack_webhook_url" not in str(schema)
