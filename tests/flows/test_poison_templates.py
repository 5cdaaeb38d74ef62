"""A template that fails for a reason of its own is set aside and replaced; transient ones are not.

Scheduled runs of real deployments on a real Prefect server, real template files in local
storage, a fake HTTP ad service on 127.0.0.1 that rejects one template.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from blocks.generators.http_service import HttpAdGenerator
from db.models import AdRun, AdTemplate, ProductTemplateUsage, ScheduledJob, ScheduledJobRun
from db.session import session_scope
from db.types import utcnow
from domain.params import AdParameters, JobParameters
from flows.templates import sync_template_catalog
from scheduler import cli as cli_module
from scheduler.cli import app
from tests.flows.support import (
    deployment_for,
    execute,
    job_runs_of,
    job_with_templates,
    scheduled_run,
)
from tests.support.http_fake import SERVICE_TOKEN, FakeServer, Reply, Seen, service_default

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


async def _scheduled_runs(job: ScheduledJob, count: int) -> list[Any]:
    """`count` runs fired by the job's schedule, one after the other (they count)."""
    deployment_id = await deployment_for(f"poison-{uuid.uuid4().hex[:8]}")
    states = []
    for i in range(count):
        run = await scheduled_run(
            deployment_id, job.id, utcnow() - timedelta(seconds=30 - i), tags=["auto-scheduled"]
        )
        states.append(await execute(run))
    return states


async def _catalog(tenant_id: uuid.UUID) -> dict[str, tuple[bool, str | None]]:
    async with session_scope() as s:
        rows = (
            await s.scalars(sa.select(AdTemplate).where(AdTemplate.tenant_id == tenant_id))
        ).all()
    return {r.storage_name: (r.active, r.inactive_reason) for r in rows}


async def _ad_runs(job_id: uuid.UUID) -> list[AdRun]:
    async with session_scope() as s:
        return list(
            (await s.scalars(sa.select(AdRun).where(AdRun.scheduled_job_id == job_id))).all()
        )


async def _usage(product_id: uuid.UUID) -> dict[str, int]:
    async with session_scope() as s:
        rows = (
            await s.execute(
                sa.select(
                    ProductTemplateUsage.template_storage_name, ProductTemplateUsage.use_count
                ).where(ProductTemplateUsage.product_id == product_id)
            )
        ).all()
    return {r[0]: r[1] for r in rows}


async def _job(job_id: uuid.UUID) -> ScheduledJob:
    async with session_scope() as s:
        job = await s.get(ScheduledJob, job_id)
    assert job is not None
    return job


def _params(**ad: Any) -> dict[str, Any]:
    return JobParameters(ad=AdParameters(variations=1, **ad)).model_dump(mode="json")


async def test_missing_template_is_set_aside_replaced_and_never_blocks_later_runs(
    tenant_id, data_dir
) -> None:
    job = await job_with_templates(
        tenant_id, templates=4, template_count=2, max_consecutive_failures=2, parameters=_params()
    )
    (data_dir / "storage" / "templates" / "sample-01.png").unlink()

    states = await _scheduled_runs(job, 3)

    assert [s.name for s in states] == ["Completed"] * 3, [s.message for s in states]
    catalog = await _catalog(tenant_id)
    assert catalog["sample-01.png"] == (False, "its file is missing from template storage")
    assert all(active for name, (active, _r) in catalog.items() if name != "sample-01.png")
    first, *later = await job_runs_of(job.id, order_by=ScheduledJobRun.scheduled_for)
    # The first run tried it once, set it aside, and made its two ad runs with a replacement.
    assert first.status == "completed" and sorted(first.templates_used or []) == [
        "sample-02.png",
        "sample-03.png",
    ]
    assert "set aside" in (first.logs or "") and "sample-01.png" in (first.logs or "")
    assert "sample-01.png" in (first.error_message or "")
    tried = [a for a in await _ad_runs(job.id) if a.template_storage_name == "sample-01.png"]
    assert [a.status for a in tried] == ["failed"]  # no later run claimed it again
    assert "template set aside" in (tried[0].error_message or "")
    assert all(r.status == "completed" and len(r.templates_used or []) == 2 for r in later)
    assert "sample-01.png" not in await _usage(job.product_id)
    stored = await _job(job.id)
    assert (stored.status, stored.consecutive_failures, stored.runs_completed) == ("active", 0, 3)

    # A sync that finds the file again puts the template back in rotation.
    (data_dir / "storage" / "templates" / "sample-01.png").write_bytes(
        (data_dir / "storage" / "templates" / "sample-02.png").read_bytes()
    )
    report = await sync_template_catalog(tenant_id)
    assert report.reactivated == ["sample-01.png"]
    assert (await _catalog(tenant_id))["sample-01.png"] == (True, None)


async def test_template_the_provider_rejects_is_set_aside_and_enabled_again_by_command(
    tenant_id, monkeypatch
) -> None:
    ok = service_default()

    def answer(seen: Seen) -> Reply:
        if isinstance(seen.body, dict) and seen.body["template"]["name"] == "sample-02.png":
            return Reply(422, {"error": {"message": "template violates the content policy"}})
        return ok(seen)

    fake = FakeServer(answer)
    fake.start()
    try:
        block = f"svc-{tenant_id.hex[:10]}"
        await HttpAdGenerator(
            url=f"{fake.url}/generate",
            auth_token=SecretStr(SERVICE_TOKEN),
            provider_limit=f"svc-{tenant_id.hex[:8]}",
        ).asave(block)
        job = await job_with_templates(
            tenant_id, templates=3, template_count=2, parameters=_params(generator_block=block)
        )
        (state,) = await _scheduled_runs(job, 1)
    finally:
        fake.stop()

    assert state.name == "Completed", state.message
    active, reason = (await _catalog(tenant_id))["sample-02.png"]
    assert not active and "the provider rejected it" in (reason or "")
    assert "422" in (reason or "") and "content policy" in (reason or "")
    rejected = [s for s in fake.seen if s.body["template"]["name"] == "sample-02.png"]
    assert len(rejected) == 1  # a permanent rejection is not retried
    (row,) = await job_runs_of(job.id, order_by=ScheduledJobRun.scheduled_for)
    assert sorted(row.templates_used or []) == ["sample-01.png", "sample-03.png"]
    assert await _usage(job.product_id) == {"sample-01.png": 1, "sample-03.png": 1}

    monkeypatch.setattr(cli_module.console, "width", 200)

    def cli(*args: str) -> Any:
        # The CLI runs its own event loop: give it a thread, as a shell would give it a process.
        return asyncio.to_thread(CliRunner().invoke, app, [*args, "--tenant", str(tenant_id)])

    listed = await cli("templates", "list", "--inactive")
    assert listed.exit_code == 0, listed.output
    assert "sample-02.png" in listed.output and "provider rejected" in listed.output
    enabled = await cli("templates", "enable", "sample-02.png")
    assert enabled.exit_code == 0 and "sample-02.png: enabled" in enabled.output
    assert (await _catalog(tenant_id))["sample-02.png"] == (True, None)
    missing = await cli("templates", "enable", "nope.png")
    assert missing.exit_code == 2 and "template nope.png not found" in missing.output  # bad input
    assert "Traceback" not in missing.output


async def test_transient_failure_only_releases_and_counts_toward_the_pause(
    tenant_id, data_dir
) -> None:
    job = await job_with_templates(
        tenant_id, templates=3, template_count=1, max_consecutive_failures=2, parameters=_params()
    )
    # Not the template's fault: the product photo every template uses is unreadable.
    (data_dir / "storage" / "products" / "trail-runner-2.png").write_bytes(b"not an image")

    states = await _scheduled_runs(job, 2)

    assert [s.is_failed() for s in states] == [True, True]
    assert all("product image is not a readable image" in (s.message or "") for s in states)
    assert all(active for active, _r in (await _catalog(tenant_id)).values())
    assert await _usage(job.product_id) == {}  # released, not used, not set aside
    # Released, it is the first unused template again: both runs tried the same one.
    assert [a.template_storage_name for a in await _ad_runs(job.id)] == ["sample-01.png"] * 2
    stored = await _job(job.id)
    assert (stored.status, stored.consecutive_failures) == ("paused", 2)
