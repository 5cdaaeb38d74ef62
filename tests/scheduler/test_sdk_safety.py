"""Bad input writes nothing; a failure at any step leaves no row without a deployment (and no
deployment without a row). Failures are real exceptions injected at the seams (the Prefect
client's calls, the database commit), checked in both the database and the Prefect API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from sqlalchemy.orm.session import SessionTransaction

from blocks.slack_webhook import SlackIncomingWebhook
from db.session import session_scope
from domain.errors import InvalidJobSpec
from scheduler.sdk import AdScheduler, DatabaseError, PrefectApiError
from tests.scheduler.conftest import Catalog, recurring_spec, tenant_deployments, tenant_jobs
from tests.support.factories import make_templates

SLACK_URL = "https://hooks.slack.com/services/T000/B000/abcd1234"


def _bad_specs(catalog: Catalog, foreign_template: str) -> dict[str, tuple[dict[str, Any], str]]:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    rec = {"type": "recurring", "timezone": "UTC"}
    return {
        "invalid cron": ({"schedule": {**rec, "cron": "61 9 * * *"}}, "schedule.cron"),
        "unknown time zone": (
            {"schedule": {**rec, "cron": "0 9 * * *", "timezone": "Mars/Olympus"}},
            "schedule.timezone",
        ),
        "past one-time date": (
            {"schedule": {"type": "one_time", "at": past}, "max_runs": None},
            "schedule.at",
        ),
        "max_runs below 1": ({"max_runs": 0}, "max_runs"),
        "template count below 1": (
            {"templates": {"mode": "unused", "count": 0}},
            "templates.count",
        ),
        "template count above catalog": (
            {"templates": {"mode": "unused", "count": 5}},
            "templates.count",
        ),
        "unknown product": ({"product_id": str(uuid.uuid4())}, "product_id"),
        "unknown template": (
            {"templates": {"mode": "specific", "templates": ["nope.png"]}},
            "templates.templates",
        ),
        "other tenant's template": (
            {"templates": {"mode": "specific", "templates": [foreign_template]}},
            "templates.templates",
        ),
        "invalid email": (
            {
                "export": {
                    "destination": "email",
                    "email_block": "resend",
                    "email_recipients": ["ok@example.com", "not-an-email"],
                }
            },
            "export.email_recipients.1",
        ),
        "more than 50 recipients": (
            {
                "export": {
                    "destination": "email",
                    "email_block": "resend",
                    "email_recipients": [f"p{i}@example.com" for i in range(51)],
                }
            },
            "export.email_recipients",
        ),
        "non-Slack webhook": (
            {
                "export": {
                    "destination": "slack",
                    "slack_webhook_url": "https://example.com/services/T/B/X",
                }
            },
            "export.slack_webhook_url",
        ),
        "over-long name": ({"name": "n" * 121}, "name"),
        "over-long description": ({"description": "d" * 1001}, "description"),
    }


BAD_CASES = [
    "invalid cron",
    "unknown time zone",
    "past one-time date",
    "max_runs below 1",
    "template count below 1",
    "template count above catalog",
    "unknown product",
    "unknown template",
    "other tenant's template",
    "invalid email",
    "more than 50 recipients",
    "non-Slack webhook",
    "over-long name",
    "over-long description",
]


async def assert_nothing_written(catalog: Catalog) -> None:
    assert await tenant_jobs(catalog.db_url, catalog.tenant_id) == []
    assert await tenant_deployments(catalog.tenant_id) == []


@pytest.mark.parametrize("case", BAD_CASES)
async def test_bad_input_names_the_field_and_writes_nothing(
    ads: AdScheduler, catalog: Catalog, case: str
) -> None:
    other_tenant = uuid.uuid4()
    async with session_scope(catalog.db_url) as session:
        [foreign] = await make_templates(
            session, other_tenant, 1, prefix=f"x{other_tenant.hex[:6]}"
        )
    overrides, field = _bad_specs(catalog, foreign.storage_name)[case]
    with pytest.raises(InvalidJobSpec) as err:
        await ads.create(recurring_spec(catalog, **overrides))
    assert err.value.fields == [field], str(err.value)
    message = str(err.value)
    assert field in message and ("allowed" in message.lower() or "should" in message), message
    await assert_nothing_written(catalog)


async def test_bad_update_changes_nothing(ads: AdScheduler, catalog: Catalog) -> None:
    job = await ads.create(recurring_spec(catalog))
    with pytest.raises(InvalidJobSpec) as err:
        await ads.update(job.id, schedule={"type": "recurring", "cron": "* * *"})
    assert err.value.fields == ["schedule.cron"]
    assert (await ads.get(job.id)).cron_expression == "0 9 * * 1"


# -- failure injection -------------------------------------------------------------------------


def _boom(*_a: Any, **_k: Any) -> Any:
    raise httpx.ConnectError("injected: Prefect API unreachable")


async def _aboom(*_a: Any, **_k: Any) -> Any:
    _boom()


def fail_write_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the database refuse to commit any transaction that wrote something."""
    original = SessionTransaction.commit

    def commit(self: SessionTransaction, _to_root: bool = False) -> Any:
        if getattr(self, "_new", None) or getattr(self, "_dirty", None):
            raise sa.exc.OperationalError("COMMIT", {}, Exception("injected: disk full"))
        return original(self, _to_root)

    monkeypatch.setattr(SessionTransaction, "commit", commit)


CREATE_STEPS = ["slack_block", "create_deployment", "one_time_run", "commit"]


@pytest.mark.parametrize("step", CREATE_STEPS)
async def test_create_is_atomic(
    ads: AdScheduler, catalog: Catalog, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    spec = recurring_spec(
        catalog,
        schedule={"type": "one_time", "at": at},
        max_runs=None,
        export={"destination": "slack", "slack_webhook_url": SLACK_URL},
    )
    blocks_before = await _slack_blocks()
    if step == "slack_block":
        monkeypatch.setattr(SlackIncomingWebhook, "asave", _aboom)
    elif step == "create_deployment":
        monkeypatch.setattr(PrefectClient, "create_deployment", _aboom)
    elif step == "one_time_run":
        monkeypatch.setattr(PrefectClient, "create_flow_run_from_deployment", _aboom)
    else:
        fail_write_commits(monkeypatch)

    # Only the project's own errors leave the SDK, with the original as the cause.
    with pytest.raises((PrefectApiError, DatabaseError)) as caught:
        await ads.create(spec)
    assert isinstance(caught.value.__cause__, Exception)
    if step == "commit":
        assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    monkeypatch.undo()
    await assert_nothing_written(catalog)
    assert await _slack_blocks() == blocks_before
    # And it works once the failure is gone.
    job = await ads.create(spec)
    assert len(await tenant_deployments(catalog.tenant_id)) == 1 and job.prefect_deployment_id


UPDATE_STEPS = ["update_deployment", "update_schedule", "commit"]


@pytest.mark.parametrize("step", UPDATE_STEPS)
async def test_update_is_atomic(
    ads: AdScheduler, catalog: Catalog, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await ads.create(recurring_spec(catalog))
    assert job.prefect_deployment_id is not None
    if step == "update_deployment":
        monkeypatch.setattr(PrefectClient, "update_deployment", _aboom)
    elif step == "update_schedule":
        monkeypatch.setattr(PrefectClient, "update_deployment_schedule", _aboom)
    else:
        fail_write_commits(monkeypatch)
    with pytest.raises((PrefectApiError, DatabaseError)):
        await ads.update(
            job.id,
            schedule={"type": "recurring", "cron": "15 6 * * *", "timezone": "Asia/Tokyo"},
            overlap="queue",
        )
    monkeypatch.undo()
    row = await ads.get(job.id)
    assert (row.cron_expression, row.timezone, row.overlap_policy) == (
        "0 9 * * 1",
        "America/New_York",
        "skip",
    )
    async with get_client() as client:
        [schedule] = await client.read_deployment_schedules(job.prefect_deployment_id)
        d = await client.read_deployment(job.prefect_deployment_id)
    assert schedule.schedule.cron == "0 9 * * 1"
    assert schedule.schedule.timezone == "America/New_York"
    assert d.concurrency_options is not None
    assert d.concurrency_options.collision_strategy.value == "CANCEL_NEW"


async def test_pause_and_delete_are_atomic(
    ads: AdScheduler, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await ads.create(recurring_spec(catalog))
    dep_id = job.prefect_deployment_id
    assert dep_id is not None

    fail_write_commits(monkeypatch)
    with pytest.raises(DatabaseError) as caught:
        await ads.pause(job.id, note="x")
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    assert "injected: disk full" in str(caught.value)
    monkeypatch.undo()
    async with get_client() as client:
        assert not (await client.read_deployment(dep_id)).paused
    assert (await ads.get(job.id)).status == "active"

    monkeypatch.setattr(PrefectClient, "delete_deployment", _aboom)
    with pytest.raises(PrefectApiError):
        await ads.delete(job.id)
    monkeypatch.undo()
    assert (await ads.get(job.id)).deleted_at is None
    async with get_client() as client:
        [d] = await client.read_deployments(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id]))
        )
    assert d.id == dep_id

    fail_write_commits(monkeypatch)
    with pytest.raises(DatabaseError):
        await ads.delete(job.id)
    monkeypatch.undo()
    assert (await ads.get(job.id)).deleted_at is None
    assert len(await tenant_deployments(catalog.tenant_id)) == 1


async def _slack_blocks() -> set[str]:
    from prefect.exceptions import PrefectHTTPStatusError

    async with get_client() as client:
        try:
            docs = await client.read_block_documents_by_type(
                SlackIncomingWebhook.get_block_type_slug()
            )
        except PrefectHTTPStatusError:  # the block type is not registered yet: no blocks
            return set()
    return {d.name for d in docs if d.name}
