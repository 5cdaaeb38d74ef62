"""The Resend API key and the Slack webhook URL never leave their blocks.

A real flow exports through the real fakes, with failures whose provider messages echo the
secrets; then every place a secret could leak is read back: captured log records (DEBUG, httpx
and httpcore included), the logs, flow-run parameters and artifacts stored on the Prefect server,
the outcomes, the delivery rows, and the saved blocks as the API returns them.
"""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

import json
import logging
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import sqlalchemy as sa
from prefect import flow
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from db.models import AdRun, ExportDelivery
from db.session import session_scope
from domain.params import ExportSettings
from flows.exports import DeliveryOutcome, ensure_export_limits, export_stored_ad_run
from tests.exports.conftest import SavedBlocks, seed_runs, settings_for
from tests.support.http_fake import FakeResend, FakeSlackWebhook

pytestmark = pytest.mark.usefixtures("use_database")


@flow(name="export-secrets-check")
async def export_in_a_flow(
    ad_run_ids: list[UUID], export: ExportSettings
) -> tuple[str, list[DeliveryOutcome]]:
    await ensure_export_limits(export)
    outcomes: list[DeliveryOutcome] = []
    for ad_run_id in ad_run_ids:
        outcomes += await export_stored_ad_run(ad_run_id, export)
    return str(flow_run.id), outcomes


async def test_secrets_appear_nowhere(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    prefect_api: str,
    fake_resend: FakeResend,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    api_key, webhook_url, webhook_path = (
        fake_resend.api_key,
        fake_slack.webhook_url,
        fake_slack.secret_path,
    )
    secrets = [api_key, webhook_url, webhook_path, webhook_path.rsplit("/", 1)[1]]
    runs = await seed_runs(
        db_url, tenant_id, storage_root, ads=1, templates=("ok.png", "echo.png", "retry.png")
    )
    # Run 2: both providers refuse, echoing the secrets in their error text.
    # Run 3: both ask for a retry first, then accept.
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "prefect", "flows", "blocks", "db"):
        caplog.set_level(logging.DEBUG, logger=name)

    first = await export_in_a_flow([runs[0].ad_run_id], settings_for(saved_blocks))
    fake_resend.fail_next(422, "validation_error", f"bad request for key {api_key}")
    fake_slack.fail_next(400, f"invalid_payload for {webhook_url}")
    fake_resend.fail_next(503, "service_unavailable", f"busy, key {api_key}")
    fake_slack.fail_next(500, f"rollup_error at {webhook_path}")
    second = await export_in_a_flow(
        [runs[1].ad_run_id, runs[2].ad_run_id], settings_for(saved_blocks)
    )
    await APILogHandler.aflush()

    outcomes = first[1] + second[1]
    assert [o.status for o in outcomes] == ["sent", "sent", "failed", "failed", "sent", "sent"]
    assert len(waits) == 2
    texts: dict[str, str] = {
        "outcomes": json.dumps([o.model_dump(mode="json") for o in outcomes]),
        "log records": "\n".join(
            f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
        ),
    }
    assert "httpx" in {r.name for r in caplog.records}  # the HTTP layer was logging at DEBUG
    async with session_scope() as session:
        rows = (
            await session.scalars(
                sa.select(ExportDelivery).where(
                    ExportDelivery.ad_run_id.in_([r.ad_run_id for r in runs])
                )
            )
        ).all()
        runs_rows = (
            await session.scalars(sa.select(AdRun).where(AdRun.id.in_([r.ad_run_id for r in runs])))
        ).all()
    texts["deliveries"] = " ".join(f"{r.error_message} {r.provider_message_id}" for r in rows)
    texts["ad runs"] = " ".join(str(r.error_message) for r in runs_rows)
    assert "***" in texts["deliveries"]  # the echoed secrets were scrubbed, not dropped

    async with httpx.AsyncClient(base_url=prefect_api) as api:
        for flow_run_id, _ in (first, second):
            run = (await api.get(f"/flow_runs/{flow_run_id}")).json()
            texts[f"flow run {flow_run_id}"] = json.dumps(run["parameters"])
            logs = (
                await api.post(
                    "/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}}
                )
            ).json()
            assert logs, "the flow's logs reached the server"
            texts[f"logs {flow_run_id}"] = json.dumps(logs)
            artifacts = (
                await api.post(
                    "/artifacts/filter",
                    json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
                )
            ).json()
            assert artifacts, "the export tasks published their outcome tables"
            texts[f"artifacts {flow_run_id}"] = json.dumps(artifacts)
        for slug, name in (
            ("ad-scheduler-resend-email", saved_blocks.email),
            ("ad-scheduler-slack-webhook", saved_blocks.slack),
        ):
            response = await api.get(f"/block_types/slug/{slug}/block_documents/name/{name}")
            assert response.status_code == 200
            texts[f"block {slug}"] = response.text
            assert "********" in response.text  # masked, and present

    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
