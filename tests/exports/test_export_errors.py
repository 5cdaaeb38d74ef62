"""Each provider error class ends as specified: retried (honouring Retry-After) or recorded.

Each test walks a table of cases, one fresh ad run per case, against the real fakes; the retry
loop's sleep is replaced by a recorder, so the asserted waits are the ones asked for.
"""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from blocks.email_resend import ResendEmail
from blocks.slack_webhook import SlackIncomingWebhook
from db.models import ExportDelivery
from db.session import session_scope
from flows.exports import export_stored_ad_run, open_exports
from tests.exports.conftest import SavedBlocks, seed_runs, settings_for
from tests.support.http_fake import FakeResend, FakeSlackWebhook
from tests.support.prefect_server import free_port

pytestmark = pytest.mark.usefixtures("use_database")


@dataclass
class Case:
    name: str
    script: list[tuple] = field(default_factory=list)
    status: str = "sent"
    kind: str | None = None
    requests: int = 1
    waits: list[float] | int = field(default_factory=list)
    says: str = ""


RESEND_CASES = [
    Case(
        "429 rate limit, Retry-After honoured",
        [(429, "rate_limit_exceeded", {"retry-after": "7"})],
        requests=2,
        waits=[7.0],
    ),
    Case("5xx JSON retried", [(500, "application_error", {})], requests=2, waits=1),
    Case("502 HTML page retried", [("raw", 502)], requests=2, waits=1),
    Case(
        "concurrent idempotent request retried",
        [(409, "concurrent_idempotent_requests", {})],
        requests=2,
        waits=1,
    ),
    Case(
        "daily quota is permanent",
        [(429, "daily_quota_exceeded", {"retry-after": "1"})],
        status="failed",
        kind="permanent",
        says="daily_quota_exceeded",
    ),
    Case(
        "monthly quota is permanent",
        [(429, "monthly_quota_exceeded", {})],
        status="failed",
        kind="permanent",
        says="monthly_quota_exceeded",
    ),
    Case(
        "422 validation is permanent",
        [(422, "validation_error", {})],
        status="failed",
        kind="permanent",
        says="422 validation_error",
    ),
    Case(
        "403 unverified domain is permanent",
        [(403, "validation_error", {})],
        status="failed",
        kind="permanent",
        says="403",
    ),
    Case(
        "409 same key, other payload is permanent",
        [(409, "invalid_idempotent_request", {})],
        status="failed",
        kind="permanent",
        says="invalid_idempotent_request",
    ),
    Case(
        "5xx until attempts run out",
        [(500, "internal_server_error", {})] * 5,
        status="failed",
        kind="retryable",
        requests=5,
        waits=4,
        says="the retry-exports flow tries again",
    ),
    Case(
        "Retry-After longer than we wait",
        [(429, "rate_limit_exceeded", {"retry-after": "3600"})],
        status="failed",
        kind="retryable",
        says="asked to wait 3600s",
    ),
]

SLACK_CASES = [
    Case(
        "429 Retry-After honoured",
        [(429, "rate_limited", {"retry-after": "3"})],
        requests=2,
        waits=[3.0],
    ),
    Case("500 rollup_error retried", [(500, "rollup_error", {})], requests=2, waits=1),
    *[
        Case(
            f"{body} means reconfigure",
            [(status, body, {})],
            status="failed",
            kind="permanent",
            says="webhook must be reconfigured",
        )
        for status, body in [
            (404, "no_service"),
            (404, "channel_not_found"),
            (410, "channel_is_archived"),
            (403, "action_prohibited"),
            (403, "invalid_token"),
            (404, "no_active_hooks"),
        ]
    ],
    Case(
        "400 invalid_blocks is permanent",
        [(400, "invalid_blocks", {})],
        status="failed",
        kind="permanent",
        says="refused the message (400 invalid_blocks)",
    ),
    Case(
        "Retry-After longer than we wait",
        [(429, "rate_limited", {"retry-after": "3600"})],
        status="failed",
        kind="retryable",
        says="asked to wait 3600s",
    ),
    Case(
        "5xx until attempts run out",
        [(503, "service_unavailable", {})] * 5,
        status="failed",
        kind="retryable",
        requests=5,
        waits=4,
    ),
]


async def _delivery(ad_run_id: object, channel: str) -> ExportDelivery:
    async with session_scope() as session:
        return (
            await session.scalars(
                sa.select(ExportDelivery).where(
                    ExportDelivery.ad_run_id == ad_run_id, ExportDelivery.channel == channel
                )
            )
        ).one()


def _check(
    case: Case, outcome, delivery: ExportDelivery, requests: int, waits: list[float]
) -> None:
    label = case.name
    assert outcome.status == case.status, (label, outcome)
    assert outcome.error_kind == case.kind, (label, outcome)
    assert requests == case.requests, label
    if isinstance(case.waits, int):
        assert len(waits) == case.waits, (label, waits)
    else:
        assert waits == case.waits, (label, waits)
    assert case.says in (outcome.error or ""), (label, outcome.error)
    assert delivery.status == case.status and delivery.error_kind == case.kind, label
    assert delivery.error_message == outcome.error, label


async def test_resend_error_classes(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_resend: FakeResend,
    waits: list[float],
) -> None:
    runs = await seed_runs(
        db_url,
        tenant_id,
        storage_root,
        ads=1,
        templates=tuple(f"case-{i}.png" for i in range(len(RESEND_CASES))),
    )
    export = settings_for(saved_blocks, destination="email")
    # The blocks and provider slots opened once for every case, as `retry-exports` opens them
    # once for every ad run it re-sends (each case alone would also wait out a rate window).
    async with open_exports(export) as opened:
        for case, run in zip(RESEND_CASES, runs, strict=True):
            waits.clear()
            before = len(fake_resend.posts)
            for step in case.script:
                if step[0] == "raw":
                    fake_resend.fail_next_raw(step[1], b"<html>Bad gateway</html>")
                else:
                    status, name, headers = step
                    fake_resend.fail_next(status, name, **headers)
            [outcome] = await export_stored_ad_run(run.ad_run_id, export, blocks=opened)
            delivery = await _delivery(run.ad_run_id, "email")
            _check(case, outcome, delivery, len(fake_resend.posts) - before, waits)
            assert not fake_resend.script, case.name


async def test_slack_error_classes(
    db_url: str,
    tenant_id,
    storage_root: Path,
    saved_blocks: SavedBlocks,
    fake_slack: FakeSlackWebhook,
    waits: list[float],
) -> None:
    runs = await seed_runs(
        db_url,
        tenant_id,
        storage_root,
        ads=1,
        templates=tuple(f"case-{i}.png" for i in range(len(SLACK_CASES))),
    )
    export = settings_for(saved_blocks, destination="slack")
    async with open_exports(export) as opened:
        for case, run in zip(SLACK_CASES, runs, strict=True):
            waits.clear()
            before = len(fake_slack.posts)
            for status, body, headers in case.script:
                fake_slack.fail_next(status, body, **headers)
            [outcome] = await export_stored_ad_run(run.ad_run_id, export, blocks=opened)
            delivery = await _delivery(run.ad_run_id, "slack")
            _check(case, outcome, delivery, len(fake_slack.posts) - before, waits)
            assert not fake_slack.script, case.name


async def test_unreachable_providers_are_retryable(
    db_url: str,
    tenant_id,
    storage_root: Path,
    prefect_api: str,
    waits: list[float],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    email, slack = f"email-down-{tenant_id.hex[:8]}", f"slack-down-{tenant_id.hex[:8]}"
    await ResendEmail(
        api_key="re_unreachable",
        from_address="a@example.com",
        base_url=closed,
        requests_per_second=50,
    ).save(email)
    await SlackIncomingWebhook(url=f"{closed}/services/T/B/secret", messages_per_second=50).save(
        slack
    )
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=1)

    outcomes = await export_stored_ad_run(run.ad_run_id, settings_for(SavedBlocks(email, slack)))

    assert [(o.status, o.error_kind) for o in outcomes] == [("failed", "retryable")] * 2
    assert len(waits) == 8  # 4 between the 5 attempts of each channel
    assert "Resend answered 500 HttpClientError" in (outcomes[0].error or "")
    assert "Slack webhook unreachable (ConnectError)" in (outcomes[1].error or "")


async def test_missing_block_is_a_permanent_failure_not_an_exception(
    db_url: str,
    tenant_id,
    storage_root: Path,
    prefect_api: str,
) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=1)
    export = settings_for(
        SavedBlocks(email="no-such-email", slack="ad-scheduler-slack-webhook/gone")
    )

    outcomes = await export_stored_ad_run(run.ad_run_id, export)

    assert [(o.status, o.error_kind) for o in outcomes] == [("failed", "permanent")] * 2
    assert "no Resend email block named 'no-such-email'" in (outcomes[0].error or "")
    assert "no Slack webhook block named 'gone'" in (outcomes[1].error or "")
