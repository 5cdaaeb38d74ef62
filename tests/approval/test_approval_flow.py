"""Approve before it ships: jobs with approval on a real process worker.

A run with approval makes and records its ads, announces them once, and suspends (its process
exits). The decision arrives through the resume API the Prefect UI's form uses, the SDK/CLI, or
the timeout; the run resumes and exports exactly the approved ads, once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.states import Cancelled
from typer.testing import CliRunner

from blocks.slack_webhook import SlackIncomingWebhook
from db.models import ExportDelivery, GeneratedAd, RunApproval, ScheduledJob, ScheduledJobRun
from db.session import session_scope
from flows.approval import expire_approvals, form_field
from flows.deployment_sync import ensure_process_pool
from flows.sample_data import seed_sample_data
from scheduler import approvals as sdk
from scheduler.sdk import AdScheduler
from tests.support.http_fake import FakeSlackWebhook
from tests.support.production import (
    NO_BASE,
    ProductionWorker,
    wait_for_flow_run,
    wait_for_worker,
    worker_environment,
    worker_process,
)

pytestmark = pytest.mark.postgres
#: Each of these tests waits for several worker flow runs in turn (suspend, then resume): more
#: than the suite's 300 s default on a loaded machine.
SEVERAL_RUNS = pytest.mark.timeout(600)

SUSPEND_TIMEOUT_S = 180


async def wait_until_suspended(flow_run_id: uuid.UUID, log: Path) -> FlowRun:
    """Poll the API until the run is Suspended (paused); fail with the worker log otherwise."""
    deadline = time.monotonic() + SUSPEND_TIMEOUT_S
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_paused():
                return run
            if run.state is not None and run.state.is_final() or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-6000:]
                raise AssertionError(f"{flow_run_id}: {run.state_name}\n{tail}")
            await asyncio.sleep(0.5)  # polling the API


async def _wait_until_row_final(database_url: str, flow_run_id: uuid.UUID, log: Path) -> None:
    """Poll the app database until the run's `scheduled_job_runs` row has left `running`."""
    deadline = time.monotonic() + SUSPEND_TIMEOUT_S
    while True:
        async with session_scope(database_url) as session:
            status = await session.scalar(
                sa.select(ScheduledJobRun.status).where(ScheduledJobRun.flow_run_id == flow_run_id)
            )
        if status not in (None, "running"):
            return
        assert time.monotonic() < deadline, (status, log.read_text(errors="replace")[-6000:])
        await asyncio.sleep(0.2)  # polling the app database for the hook's write, with a deadline


def _spec(name: str, product_id: uuid.UUID, slack: str, **approval: Any) -> dict[str, Any]:
    return {
        "name": name,
        "product_id": str(product_id),
        "schedule": {"type": "recurring", "cron": "0 3 1 1 *", "timezone": "UTC"},
        "templates": {"mode": "unused", "count": 2},
        "ad": {"variations": 1},
        "export": {"destination": "slack", "slack_webhook_block": slack},
        "approval": {"enabled": True, **approval},
    }


async def _approval(worker: ProductionWorker, flow_run_id: uuid.UUID) -> RunApproval:
    async with session_scope(worker.database_url) as session:
        row = await session.scalar(
            sa.select(RunApproval).where(RunApproval.flow_run_id == flow_run_id)
        )
    assert row is not None
    return row


async def _deliveries(worker: ProductionWorker, tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    async with session_scope(worker.database_url) as session:
        rows = await session.execute(
            sa.select(
                ExportDelivery.ad_run_id, ExportDelivery.channel, ExportDelivery.status
            ).where(ExportDelivery.tenant_id == tenant)
        )
        return [tuple(r) for r in rows.all()]


async def _ad_runs_of(worker: ProductionWorker, ad_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    async with session_scope(worker.database_url) as session:
        rows = await session.execute(
            sa.select(GeneratedAd.id, GeneratedAd.ad_run_id, GeneratedAd.review_status).where(
                GeneratedAd.id.in_(ad_ids)
            )
        )
        return {r[0]: (r[1], r[2]) for r in rows.all()}


def _notices(slack: FakeSlackWebhook) -> list[Any]:
    return [p for p in slack.posts if "waiting for approval" in str(p.json.get("text", ""))]


@SEVERAL_RUNS
async def test_runs_wait_for_a_decision_then_export_exactly_the_approved_ads(
    production_settings: ProductionWorker,
) -> None:
    worker = production_settings
    tenant = uuid.uuid4()
    suffix = uuid.uuid4().hex[:8]
    slack = FakeSlackWebhook()
    slack.server.start()
    try:
        await SlackIncomingWebhook(url=slack.webhook_url).asave(f"slack-{suffix}")
        _brand, product, _ = await seed_sample_data(tenant, worker.storage, templates=8)
        block = f"slack-{suffix}"
        async with worker.scheduler(tenant) as ads:
            by_ui = await ads.create(_spec("by-ui", product.id, block))
            by_sdk = await ads.create(_spec("by-sdk", product.id, block))
            discard = await ads.create(_spec("t-discard", product.id, block, timeout="1h"))
            export = await ads.create(
                _spec("t-export", product.id, block, timeout="1h", on_timeout="export")
            )
            jobs = (by_ui, by_sdk, discard, export)
            run_ids = [await ads.run_now(job.id) for job in jobs]
        await asyncio.gather(*(wait_until_suspended(r, worker.log) for r in run_ids))

        # Waiting: ads recorded, row awaiting, one notice per run, nothing exported.
        approvals = [await _approval(worker, r) for r in run_ids]
        assert all(a.status == "awaiting" and len(a.ad_ids) == 2 for a in approvals)
        async with session_scope(worker.database_url) as session:
            statuses = (
                await session.scalars(
                    sa.select(ScheduledJobRun.status).where(
                        ScheduledJobRun.flow_run_id.in_(run_ids)
                    )
                )
            ).all()
        assert list(statuses) == ["awaiting_approval"] * 4
        assert await _deliveries(worker, tenant) == []
        assert len(slack.posts) == 4 and len(_notices(slack)) == 4

        pending = await sdk.list_pending(tenant, database_url=worker.database_url)
        assert {v.flow_run_id for v in pending} == set(run_ids)

        # Bad decisions: a clear error, nothing written.
        ui_ads = approvals[0].ad_ids
        other_ad = approvals[1].ad_ids[0]
        with pytest.raises(sdk.BadDecision, match=r"approve: not an ad of this run"):
            await sdk.decide(
                tenant, run_ids[0], approve=[ui_ads[0], other_ad], database_url=worker.database_url
            )
        with pytest.raises(sdk.BadDecision, match=r"decision: empty"):
            await sdk.decide(tenant, run_ids[0], database_url=worker.database_url)
        with pytest.raises(sdk.BadDecision, match=r"undecided"):
            await sdk.decide(
                tenant, run_ids[0], approve=[ui_ads[0]], database_url=worker.database_url
            )
        with pytest.raises(sdk.ApprovalNotFound):
            await sdk.show(uuid.uuid4(), run_ids[0], database_url=worker.database_url)
        assert (await _approval(worker, run_ids[0])).status == "awaiting"

        # 1. The UI's path: the resume API with the form's input (approve one, reject one).
        form = {form_field(0): "approve", form_field(1): "reject", "note": "2nd off-brand"}
        async with get_client() as client:
            accepted = await client.resume_flow_run(run_ids[0], run_input=form)
            assert accepted.status == SetStateStatus.ACCEPT
        # 2. The SDK: reject everything.
        rejected = await sdk.decide(
            tenant,
            run_ids[1],
            reject=approvals[1].ad_ids,
            note="not this week",
            reviewer="ana",
            database_url=worker.database_url,
        )
        assert rejected.status == "rejected" and rejected.decided_via == "sdk"
        # 3./4. The timeout, for both policies (as if the hour had passed).
        assert await expire_approvals(now_offset_seconds=2 * 3600) == 2

        finished = await asyncio.gather(*(wait_for_flow_run(r, log=worker.log) for r in run_ids))
        assert [r.state_name for r in finished] == ["Completed"] * 4, worker.log_tail()

        # A second submission changes nothing.
        async with get_client() as client:
            again = await client.resume_flow_run(run_ids[0], run_input=form)
        assert again.status != SetStateStatus.ACCEPT
        with pytest.raises(sdk.DecisionConflict, match="already decided"):
            await sdk.decide(tenant, run_ids[0], approve=ui_ads, database_url=worker.database_url)

        settled = [await _approval(worker, r) for r in run_ids]
        assert [a.status for a in settled] == ["partial", "rejected", "timed_out", "timed_out"]
        assert [a.decided_via for a in settled] == ["ui", "sdk", "timeout", "timeout"]
        assert settled[0].approved_ad_ids == [ui_ads[0]] and settled[0].note == "2nd off-brand"
        assert settled[1].decided_by == "ana"
        assert settled[3].approved_ad_ids == approvals[3].ad_ids
        assert "on_timeout=discard" in (settled[2].note or "")

        # Exactly the approved ads were exported, once: run 1's first ad run and run 4's two.
        reviewed = await _ad_runs_of(worker, [a for s in settled for a in s.ad_ids])
        expected = {reviewed[ui_ads[0]][0]} | {reviewed[a][0] for a in approvals[3].ad_ids}
        deliveries = await _deliveries(worker, tenant)
        assert sorted(deliveries) == sorted((ad_run, "slack", "sent") for ad_run in expected)
        assert reviewed[ui_ads[1]][1] == "rejected" and reviewed[ui_ads[0]][1] == "approved"
        # Rejected ads stay in storage.
        async with session_scope(worker.database_url) as session:
            paths = (
                await session.scalars(
                    sa.select(GeneratedAd.storage_path).where(
                        GeneratedAd.id.in_(approvals[1].ad_ids)
                    )
                )
            ).all()
            rows = (
                await session.scalars(
                    sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id.in_(run_ids))
                )
            ).all()
            counted = (
                await session.scalars(
                    sa.select(ScheduledJob.runs_completed).where(
                        ScheduledJob.id.in_([j.id for j in jobs])
                    )
                )
            ).all()
        assert all((worker.storage_root / p).is_file() for p in paths)
        assert {r.status for r in rows} == {"completed"}
        assert all("approval:" in (r.logs or "") for r in rows)
        # Manual runs are recorded but do not count toward max_runs (scheduled ones would).
        assert list(counted) == [0, 0, 0, 0]
        assert len(_notices(slack)) == 4  # still one notice per run
    finally:
        slack.server.stop()


def test_cli_lists_shows_and_refuses_bad_input(
    production_settings: ProductionWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.cli import app

    worker = production_settings
    tenant = uuid.uuid4()
    monkeypatch.setenv("AD_SCHEDULER_TENANT_ID", str(tenant))
    runner = CliRunner()
    listed = runner.invoke(app, ["approvals", "list"])
    assert listed.exit_code == 0 and "no runs awaiting approval" in listed.output
    missing = runner.invoke(app, ["approvals", "show", str(uuid.uuid4())])
    assert missing.exit_code == 2 and "not found" in missing.output
    bad = runner.invoke(app, ["approvals", "decide", "not-a-run", "--approve", "x"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert worker.database_url  # the CLI read the worker's database (no approval for tenant)


@SEVERAL_RUNS
async def test_a_worker_restarted_while_a_run_waits_loses_nothing(
    production_settings: ProductionWorker, tmp_path: Path
) -> None:
    worker = production_settings
    tenant = uuid.uuid4()
    pool = f"approval-restart-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await ensure_process_pool(client, pool)
    env = worker_environment(
        worker.api_url, worker.database_block, worker.storage_block, tmp_path / "data"
    )
    _brand, product, _ = await seed_sample_data(tenant, worker.storage, templates=6)
    slack = FakeSlackWebhook()
    slack.server.start()
    block = f"slack-{uuid.uuid4().hex[:8]}"
    await SlackIncomingWebhook(url=slack.webhook_url).asave(block)
    spec = {
        "name": "restart",
        "product_id": str(product.id),
        "schedule": {"type": "recurring", "cron": "0 3 1 1 *", "timezone": "UTC"},
        "templates": {"mode": "unused", "count": 2},
        "ad": {"variations": 1},
        "approval": {"enabled": True, "timeout": "2h", "on_timeout": "export"},
    }
    with worker_process(pool, tmp_path, env, log_name="first.log") as (proc, log):
        await wait_for_worker(pool, proc, log)
        async with AdScheduler(
            tenant, database_url=worker.database_url, base_deployment=NO_BASE, work_pool=pool
        ) as ads:
            job = await ads.create(spec)
            run_id = await ads.run_now(job.id)
            stranded = await ads.create(_spec("stranded", product.id, block, timeout="2h"))
            stranded_run = await ads.run_now(stranded.id)
            dropped = await ads.create(_spec("dropped", product.id, block, timeout="2h"))
            dropped_run = await ads.run_now(dropped.id)
        for waiting in (run_id, stranded_run, dropped_run):
            await wait_until_suspended(waiting, log)
    # The worker is gone (its process group stopped); the suspended run held no process.
    assert proc.poll() is not None
    view = await sdk.show(tenant, run_id, database_url=worker.database_url)
    decided = await sdk.decide(
        tenant,
        run_id,
        approve=[view.ads[0].id],
        reject=[view.ads[1].id],
        database_url=worker.database_url,
    )
    assert decided.status == "partial"
    # The other run is decided in the UI, then cancelled by Prefect before its flow starts, as
    # when the job's next run holds the deployment's slot (overlap `skip`, CANCEL_NEW).
    async with get_client() as client:
        answer = {form_field(0): "reject", form_field(1): "approve"}
        assert (await client.resume_flow_run(stranded_run, run_input=answer)).status == (
            SetStateStatus.ACCEPT
        )
        await client.set_flow_run_state(
            stranded_run, Cancelled(message="Deployment concurrency limit reached."), force=True
        )
        # And a person cancels the third waiting run in the UI, undecided.
        await client.set_flow_run_state(dropped_run, Cancelled(message="not needed"), force=True)
    with worker_process(pool, tmp_path, env, log_name="second.log") as (proc, log):
        finished = await wait_for_flow_run(run_id, log=log)
        # Prefect has Completed before the run's final-state hook mirrors it into the run's row:
        # the worker stays until the row is final, so stopping it cannot cut the hook short.
        await _wait_until_row_final(worker.database_url, run_id, log)
    assert finished.state_name == "Completed", log.read_text(errors="replace")[-6000:]
    try:
        # The sweeper finishes the stranded decision: the approved ad is exported, once.
        assert await expire_approvals(now_offset_seconds=300) == 2
        assert await expire_approvals(now_offset_seconds=300) == 0
    finally:
        slack.server.stop()
    left = await _approval(worker, stranded_run)
    assert (left.status, left.decided_via) == ("partial", "ui") and left.exported_at
    reviewed = await _ad_runs_of(worker, left.ad_ids)
    assert await _deliveries(worker, tenant) == [(reviewed[left.ad_ids[1]][0], "slack", "sent")]
    ended = await _approval(worker, dropped_run)
    assert (ended.status, ended.decided_via) == ("rejected", "run_ended")
    assert "ended Cancelled before a decision" in (ended.note or "")
    async with session_scope(worker.database_url) as session:
        made = (
            await session.scalars(
                sa.select(GeneratedAd.review_status).where(GeneratedAd.tenant_id == tenant)
            )
        ).all()
        row = await session.scalar(
            sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == run_id)
        )
    # Nothing generated twice on the resumed pass, the decision kept, the run completed.
    assert sorted(made, key=str) == ["approved"] * 2 + ["rejected"] * 4
    assert row is not None and row.status == "completed" and len(row.ad_run_ids or []) == 2
