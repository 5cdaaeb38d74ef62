"""Every block type the project ships, used by jobs that a real process worker runs.

The worker's flow processes resolve everything by reference, as in production: the generators
(an HTTP service block and a saved local renderer by "slug/name", a Gemini block by bare
name), the Resend email and Slack
webhook blocks, the `AdStorage` block named by AD_SCHEDULER_STORAGE_BLOCK and the
`AsyncSqlAlchemyConnector` block named by DATABASE_URL. The providers are fakes on 127.0.0.1;
the test asserts on what they received, on the app database, the storage folder and the API.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks.email_resend import ResendEmail
from blocks.generators.gemini import GeminiImageGenerator
from blocks.generators.http_service import HttpAdGenerator
from blocks.generators.local import LocalAdRenderer
from blocks.slack_webhook import SlackIncomingWebhook
from db.models import AdRun, ExportDelivery, GeneratedAd, ScheduledJobRun
from db.session import session_scope
from flows.sample_data import seed_sample_data
from tests.support.http_fake import (
    GEMINI_KEY,
    SERVICE_TOKEN,
    FakeResend,
    FakeServer,
    FakeSlackWebhook,
    gemini_default,
    running,
    service_default,
)
from tests.support.production import ProductionWorker, wait_for_flow_run

pytestmark = pytest.mark.postgres


async def test_jobs_naming_every_shipped_block_run_on_a_process_worker(
    production_settings: ProductionWorker,
) -> None:
    worker = production_settings
    tenant = uuid.uuid4()
    suffix = uuid.uuid4().hex[:8]
    resend = FakeResend(api_key=f"re_test_{suffix}")
    slack = FakeSlackWebhook()
    resend.server.start()
    slack.server.start()
    try:
        with (
            running(FakeServer(service_default())) as service,
            running(FakeServer(gemini_default())) as gemini,
        ):
            await HttpAdGenerator(
                url=f"{service.url}/ads",
                auth_token=SecretStr(SERVICE_TOKEN),
                provider_limit=f"prod-http-{suffix}",
            ).asave(f"svc-{suffix}")
            await GeminiImageGenerator(
                api_key=SecretStr(GEMINI_KEY),
                base_url=f"{gemini.url}/v1beta",
                provider_limit=f"prod-gemini-{suffix}",
            ).asave(f"gem-{suffix}")
            await ResendEmail(
                api_key=resend.api_key, from_address="Ads <ads@example.test>", base_url=resend.url
            ).asave(f"mail-{suffix}")
            await SlackIncomingWebhook(url=slack.webhook_url).asave(f"slack-{suffix}")
            await LocalAdRenderer(provider_limit=f"prod-local-{suffix}").asave(f"local-{suffix}")
            # Templates go through the storage *block* (the worker's), rows into its database.
            _brand, product, _ = await seed_sample_data(tenant, worker.storage, templates=5)

            def spec(
                name: str, generator: str, export: dict[str, object], count: int = 2
            ) -> dict[str, object]:
                return {
                    "name": name,
                    "product_id": str(product.id),
                    "schedule": {"type": "recurring", "cron": "0 3 1 1 *", "timezone": "UTC"},
                    "templates": {"mode": "unused", "count": count},
                    "ad": {"variations": 1, "generator_block": generator},
                    "export": export,
                }

            async with worker.scheduler(tenant) as ads:
                via_http = await ads.create(
                    spec(
                        "via-http",
                        f"http-ad-generator/svc-{suffix}",
                        {
                            "destination": "email",
                            "email_recipients": ["team@example.com"],
                            "email_block": f"mail-{suffix}",
                        },
                    )
                )
                via_gemini = await ads.create(
                    spec(
                        "via-gemini",
                        f"gem-{suffix}",  # a bare name: looked up across the generator types
                        {"destination": "slack", "slack_webhook_block": f"slack-{suffix}"},
                    )
                )
                via_local = await ads.create(
                    spec(
                        "via-local-block",
                        f"ad-scheduler-local-renderer/local-{suffix}",
                        {"destination": "none"},
                        count=1,
                    )
                )
                jobs = (via_http, via_gemini, via_local)
                run_ids = [await ads.run_now(job.id) for job in jobs]
            runs = await asyncio.gather(*(wait_for_flow_run(r, log=worker.log) for r in run_ids))
            assert [r.state_name for r in runs] == ["Completed"] * 3, worker.log_tail()

            # The providers were called by the flow processes, with the blocks' secrets.
            service_posts = [s for s in service.seen if s.method == "POST"]
            gemini_posts = [s for s in gemini.seen if s.path.endswith(":generateContent")]
            assert len(service_posts) == 2 and len(gemini_posts) == 2
            assert {s.headers.get("authorization") for s in service_posts} == {
                f"Bearer {SERVICE_TOKEN}"
            }
            assert {s.headers.get("x-goog-api-key") for s in gemini_posts} == {GEMINI_KEY}
    finally:
        resend.server.stop()
        slack.server.stop()

    # One email per ad run to the fake Resend; one Slack post (or more) per ad run.
    assert len(resend.posts) == 2
    assert all(p.json["to"] == ["team@example.com"] for p in resend.posts)
    assert len(slack.posts) >= 2

    # The app database behind the connector block holds everything, nothing left pending.
    async with session_scope(worker.database_url) as session:
        job_runs = (
            await session.scalars(
                sa.select(ScheduledJobRun).where(ScheduledJobRun.tenant_id == tenant)
            )
        ).all()
        ad_runs = (await session.scalars(sa.select(AdRun).where(AdRun.tenant_id == tenant))).all()
        made = (
            await session.scalars(sa.select(GeneratedAd).where(GeneratedAd.tenant_id == tenant))
        ).all()
        deliveries = (
            await session.execute(
                sa.select(ExportDelivery.channel, ExportDelivery.status).where(
                    ExportDelivery.tenant_id == tenant
                )
            )
        ).all()
    assert {(r.flow_run_id, r.status) for r in job_runs} == {(i, "completed") for i in run_ids}
    assert len(ad_runs) == 5 and {a.status for a in ad_runs} == {"completed"}
    # Five distinct templates: the three concurrent runs never claimed the same one.
    assert len({a.template_storage_name for a in ad_runs}) == 5
    assert sorted(tuple(d) for d in deliveries) == [("email", "sent")] * 2 + [("slack", "sent")] * 2
    # The images are in the storage block's folder (not the worker's default data folder).
    assert len(made) == 5
    for ad in made:
        assert (worker.storage_root / ad.storage_path).is_file()

    async with get_client() as client:
        for run_id, job in zip(run_ids, jobs, strict=True):
            run = await client.read_flow_run(run_id)
            assert run.deployment_id == job.prefect_deployment_id
            assert f"job:{job.id}" in run.tags
