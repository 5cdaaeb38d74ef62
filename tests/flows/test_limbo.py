"""Nothing stays in limbo: every ad run, claim and delivery of a run that is over is final.

Real PostgreSQL/SQLite, a real Prefect server, real subprocesses killed with SIGKILL, a real
database outage (`ALLOW_CONNECTIONS false` + terminated backends), a fake Slack on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from blocks.generators.local import LocalAdRenderer
from blocks.slack_webhook import SlackIncomingWebhook
from config import get_settings
from db.models import (
    AdRun,
    ExportDelivery,
    GeneratedAd,
    ProductTemplateUsage,
    ScheduledJobRun,
)
from db.session import dispose_engines, session_scope
from db.types import utcnow
from domain.params import AdParameters, ExportSettings, JobParameters
from flows.reconcile import reconcile_job_runs
from tests.flows.support import deployment_for, execute, job_with_templates, scheduled_run
from tests.support.databases import PG_ADMIN_DSN
from tests.support.http_fake import FakeSlackWebhook

ROOT = Path(__file__).resolve().parents[2]
NOTHING_TO_DO = {
    "rows_healed": 0,
    "runs_crashed": 0,
    "claims_released": 0,
    "ad_runs_settled": 0,
    "runs_finished": 0,
    "ad_runs_exported": 0,
    "jobs_changed": 0,
    "boards_refreshed": 0,
    "problems": [],
}


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackWebhook]:
    """A fake Slack incoming webhook on 127.0.0.1."""
    fake = FakeSlackWebhook()
    fake.server.start()
    yield fake
    fake.server.stop()


async def wait_until(predicate, timeout: float = 90.0) -> None:
    """Poll a condition another process makes true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


def start_run(
    flow_run_id: uuid.UUID, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Execute the flow run in its own process group, as a worker's flow process would."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.flows.run_one", str(flow_run_id)],
        cwd=ROOT,
        env={**os.environ, **(extra_env or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def ad_runs_of(flow_run_id: uuid.UUID) -> list[AdRun]:
    async with session_scope() as s:
        return list(
            (
                await s.scalars(
                    sa.select(AdRun)
                    .where(AdRun.flow_run_id == flow_run_id)
                    .order_by(AdRun.template_storage_name)
                )
            ).all()
        )


async def claims_of(flow_run_id: uuid.UUID) -> int:
    async with session_scope() as s:
        return (
            await s.scalar(
                sa.select(sa.func.count()).where(
                    ProductTemplateUsage.claimed_by_flow_run_id == flow_run_id
                )
            )
            or 0
        )


async def usage_of(product_id: uuid.UUID) -> dict[str, int]:
    async with session_scope() as s:
        rows = (
            await s.execute(
                sa.select(
                    ProductTemplateUsage.template_storage_name, ProductTemplateUsage.use_count
                ).where(ProductTemplateUsage.product_id == product_id)
            )
        ).all()
    return {r[0]: r[1] for r in rows}


async def run_row(flow_run_id: uuid.UUID) -> ScheduledJobRun | None:
    async with session_scope() as s:
        return await s.scalar(
            sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == flow_run_id)
        )


async def stored_ads_match_rows(data_dir: Path, tenant_id: uuid.UUID) -> tuple[set[str], set[str]]:
    """(files under the tenant's ads folder, storage paths of its generated_ads rows)."""
    folder = data_dir / "storage" / "ads" / str(tenant_id)
    files = (
        {p.relative_to(data_dir / "storage").as_posix() for p in folder.rglob("*") if p.is_file()}
        if folder.exists()
        else set()
    )
    async with session_scope() as s:
        rows = set(
            (
                await s.scalars(
                    sa.select(GeneratedAd.storage_path).where(GeneratedAd.tenant_id == tenant_id)
                )
            ).all()
        )
    return files, rows


@pytest.mark.usefixtures("prefect_api", "use_database")
async def test_a_run_that_fails_before_generating_leaves_nothing_pending(
    tenant_id, data_dir
) -> None:
    params = JobParameters(ad=AdParameters(variations=1, generator_block="no-such-generator"))
    job = await job_with_templates(
        tenant_id, templates=3, template_count=2, parameters=params.model_dump(mode="json")
    )
    deployment_id = await deployment_for(f"noblock-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())

    state = await execute(flow_run)

    assert state.is_failed() and "no-such-generator" in (state.message or "")
    ad_runs = await ad_runs_of(flow_run.id)
    assert len(ad_runs) == 2
    for ad_run in ad_runs:
        assert ad_run.status == "failed" and ad_run.completed_at is not None
        assert "block named 'no-such-generator' is saved" in (ad_run.error_message or "")
    assert await claims_of(flow_run.id) == 0
    assert await usage_of(job.product_id) == {}  # released: both templates are unused again
    row = await run_row(flow_run.id)
    assert row is not None and row.status == "failed"
    files, rows = await stored_ads_match_rows(data_dir, tenant_id)
    assert files == rows == set()
    # The run settled its own work: the reconciler has nothing left to do for it.
    report = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    assert report.model_dump() == NOTHING_TO_DO | {"runs_finished": 1}
    row = await run_row(flow_run.id)
    assert row is not None and row.templates_used == [] and len(row.ad_run_ids or []) == 2
    again = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    assert again.model_dump() == NOTHING_TO_DO


@pytest.mark.usefixtures("prefect_api", "use_database")
async def test_killed_run_ad_runs_end_and_its_finished_template_is_used_and_exported(
    tenant_id, data_dir, fake_slack
) -> None:
    suffix = tenant_id.hex[:10]
    await LocalAdRenderer(latency_seconds=3, provider_limit=f"kill-{suffix}").asave(
        f"slow-{suffix}"
    )
    await SlackIncomingWebhook(url=fake_slack.webhook_url, messages_per_second=50).asave(
        f"slack-{suffix}"
    )
    params = JobParameters(
        ad=AdParameters(variations=1, generator_block=f"slow-{suffix}"),
        export=ExportSettings(destination="slack", slack_webhook_block=f"slack-{suffix}"),
        template_concurrency=1,  # one template after the other: kill between the two
    )
    job = await job_with_templates(
        tenant_id, templates=3, template_count=2, parameters=params.model_dump(mode="json")
    )
    deployment_id = await deployment_for(f"killexp-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())

    proc = start_run(flow_run.id)
    try:

        async def first_done() -> bool:
            return [a.status for a in await ad_runs_of(flow_run.id)].count("completed") == 1

        await wait_until(first_done)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # worker and flow gone together: no hook runs
        proc.wait(timeout=30)

    ad_runs = await ad_runs_of(flow_run.id)
    done = next(a for a in ad_runs if a.status == "completed")
    stuck = next(a for a in ad_runs if a.status != "completed")
    assert stuck.status == "pending" and fake_slack.posts == []  # the limbo the kill leaves

    report = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)

    assert (report.runs_crashed, report.ad_runs_settled, report.claims_released) == (1, 1, 1)
    assert (report.runs_finished, report.ad_runs_exported, report.problems) == (1, 1, [])
    by_id = {a.id: a for a in await ad_runs_of(flow_run.id)}
    assert by_id[done.id].status == "completed"
    assert by_id[stuck.id].status == "failed"
    assert "not finished: the run ended Crashed" in (by_id[stuck.id].error_message or "")
    row = await run_row(flow_run.id)
    assert row is not None and (row.status, row.prefect_state) == ("failed", "Crashed")
    assert row.templates_used == [done.template_storage_name]
    assert sorted(row.ad_run_ids or []) == sorted(by_id)
    assert "recorded by the reconciler" in (row.logs or "")
    # Usage: the finished template is used once, the unfinished one is unused again.
    assert await usage_of(job.product_id) == {done.template_storage_name: 1}
    assert await claims_of(flow_run.id) == 0
    # The finished ad run was exported exactly once, and its delivery is recorded as sent.
    assert len(fake_slack.posts) == 1
    async with session_scope() as s:
        deliveries = list(
            (
                await s.scalars(
                    sa.select(ExportDelivery).where(ExportDelivery.ad_run_id.in_(list(by_id)))
                )
            ).all()
        )
    assert [(d.ad_run_id, d.channel, d.status) for d in deliveries] == [(done.id, "slack", "sent")]
    files, rows = await stored_ads_match_rows(data_dir, tenant_id)
    assert files == rows and len(rows) == 1
    async with get_client() as client:
        assert (await client.read_flow_run(flow_run.id)).state.type == StateType.CRASHED

    again = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    assert again.model_dump() == NOTHING_TO_DO
    assert len(fake_slack.posts) == 1


@pytest.mark.usefixtures("prefect_api", "data_dir")
async def test_database_outage_mid_run_leaves_no_orphan_image_and_nothing_pending(
    pg_database_url, tenant_id, data_dir, monkeypatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    get_settings.cache_clear()
    suffix = tenant_id.hex[:10]
    await LocalAdRenderer(latency_seconds=3, provider_limit=f"outage-{suffix}").asave(
        f"outage-{suffix}"
    )
    params = JobParameters(ad=AdParameters(variations=2, generator_block=f"outage-{suffix}"))
    job = await job_with_templates(
        tenant_id, templates=2, template_count=1, parameters=params.model_dump(mode="json")
    )
    deployment_id = await deployment_for(f"outage-{tenant_id.hex[:8]}")
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())
    database = pg_database_url.rsplit("/", 1)[1]

    # The database is gone for good here: no point riding out ~25 s of outage per write.
    proc = start_run(flow_run.id, {"AD_SCHEDULER_DB_RETRY_ATTEMPTS": "1"})
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:

        async def generating() -> bool:
            return await claims_of(flow_run.id) == 1 and len(await ad_runs_of(flow_run.id)) == 1

        await wait_until(generating)
        # The database goes away while the provider is generating: the images are made and
        # stored, but their rows can never be written.
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        exit_code = await asyncio.to_thread(proc.wait, 120)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    await dispose_engines()  # this process's pooled connections were terminated too

    assert exit_code != 0
    # No image without its row: the run deleted what it had stored.
    files, rows = await stored_ads_match_rows(data_dir, tenant_id)
    assert files == rows == set()
    async with get_client() as client:
        assert (await client.read_flow_run(flow_run.id)).state.type == StateType.FAILED

    report = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)

    assert report.problems == []
    ad_runs = await ad_runs_of(flow_run.id)
    assert [a.status for a in ad_runs] == ["failed"]
    assert "the run ended Failed" in (ad_runs[0].error_message or "")
    assert await claims_of(flow_run.id) == 0 and await usage_of(job.product_id) == {}
    row = await run_row(flow_run.id)
    assert row is not None and row.status == "failed" and row.templates_used == []
    assert (await reconcile_job_runs(job_ids=[job.id])).model_dump() == NOTHING_TO_DO


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc: the flow process a worker started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces, so split after its closing paren.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.mark.usefixtures("prefect_api", "data_dir")
async def test_flow_process_killed_under_a_live_worker_is_settled_by_its_crashed_hook(
    pg_database_url, tenant_id, monkeypatch
) -> None:
    import tempfile

    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.scheduled_job import run_scheduled_job
    from scheduler.local_prefect import (
        TUNED_WORKER_ENV,
        background_process,
        prefect_env,
        worker_args,
    )

    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    get_settings.cache_clear()
    suffix = tenant_id.hex[:10]
    await LocalAdRenderer(latency_seconds=60, provider_limit=f"hook-{suffix}").asave(
        f"hook-{suffix}"
    )
    params = JobParameters(ad=AdParameters(variations=1, generator_block=f"hook-{suffix}"))
    job = await job_with_templates(
        tenant_id, templates=3, template_count=2, parameters=params.model_dump(mode="json")
    )
    pool = f"hook-{suffix}"
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    deployment = await run_scheduled_job.ato_deployment(  # type: ignore[attr-defined]
        name=f"hook-{suffix}", work_pool_name=pool, job_variables={"working_dir": str(ROOT)}
    )
    deployment_id = await deployment.aapply()
    flow_run = await scheduled_run(deployment_id, job.id, utcnow())

    with tempfile.TemporaryDirectory(prefix="worker-home-") as home:
        env = prefect_env(Path(home), extra=TUNED_WORKER_ENV)
        env["PREFECT_API_URL"] = os.environ["PREFECT_API_URL"]  # the test server
        with background_process(worker_args(pool), env, Path(home) / "worker.log") as worker:

            async def generating() -> bool:
                return await claims_of(flow_run.id) == 2 and len(await ad_runs_of(flow_run.id)) == 2

            await wait_until(generating, timeout=120)
            flow_processes = _children(worker.pid)
            assert len(flow_processes) == 1, flow_processes
            os.kill(flow_processes[0], signal.SIGKILL)  # the flow process only; the worker lives

            async def settled() -> bool:
                ad_runs = await ad_runs_of(flow_run.id)
                return (
                    all(a.status == "failed" for a in ad_runs) and await claims_of(flow_run.id) == 0
                )

            # No reconciler: the worker's crashed hook (a fresh process) settles the run.
            await wait_until(settled, timeout=120)

    async with get_client() as client:
        assert (await client.read_flow_run(flow_run.id)).state.type == StateType.CRASHED
    for ad_run in await ad_runs_of(flow_run.id):
        assert "not finished: the run ended Crashed" in (ad_run.error_message or "")
    row = await run_row(flow_run.id)
    assert row is not None and (row.status, row.prefect_state) == ("failed", "Crashed")
    assert await usage_of(job.product_id) == {}
    report = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    assert report.model_dump() == NOTHING_TO_DO | {"runs_finished": 1}


@pytest.mark.usefixtures("prefect_api", "use_database")
async def test_slack_post_cut_off_by_a_kill_is_surfaced_not_sent_again(tenant_id) -> None:
    import threading

    from tests.support.http_fake import FakeServer, Recorded, Reply

    answered = threading.Event()

    def slow_slack(request: Recorded) -> Reply:
        answered.wait(timeout=60)  # Slack has the post; its answer never reaches the run
        return Reply(200, b"ok", {"content-type": "text/html"})

    slack = FakeServer(slow_slack).start()
    try:
        suffix = tenant_id.hex[:10]
        await SlackIncomingWebhook(
            url=f"{slack.url}/services/T000/B000/{suffix}", messages_per_second=50
        ).asave(f"cut-{suffix}")
        params = JobParameters(
            ad=AdParameters(variations=1),
            export=ExportSettings(destination="slack", slack_webhook_block=f"cut-{suffix}"),
        )
        job = await job_with_templates(
            tenant_id, templates=2, template_count=1, parameters=params.model_dump(mode="json")
        )
        deployment_id = await deployment_for(f"cut-{tenant_id.hex[:8]}")
        flow_run = await scheduled_run(deployment_id, job.id, utcnow())

        proc = start_run(flow_run.id)
        try:

            async def posting() -> bool:
                return len(slack.requests) == 1

            await wait_until(posting)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            answered.set()

        report = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
        again = await reconcile_job_runs(job_ids=[job.id], stale_after_seconds=0)
    finally:
        slack.stop()

    assert (report.runs_crashed, report.runs_finished, report.ad_runs_exported) == (1, 1, 0)
    assert again.model_dump() == NOTHING_TO_DO
    (ad_run,) = await ad_runs_of(flow_run.id)
    assert ad_run.status == "completed"
    async with session_scope() as s:
        (delivery,) = (
            await s.scalars(sa.select(ExportDelivery).where(ExportDelivery.ad_run_id == ad_run.id))
        ).all()
    assert delivery.status == "unconfirmed"
    assert (delivery.error_message or "").startswith("sent, not recorded — check")
    assert len(slack.requests) == 1  # never posted twice
    row = await run_row(flow_run.id)
    assert row is not None and row.templates_used == [ad_run.template_storage_name]
