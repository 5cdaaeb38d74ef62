"""The app database goes away while an export is being recorded: nothing is sent twice.

Real PostgreSQL is made unreachable for real (`tests/exports/outage.py`) from inside the fake
provider, while the sender waits for the provider's answer — the moment the provider has accepted
the post and nothing is recorded yet. The outage is ended by the test at a known retry of the
database retry policy (its `sleep` is the test's hook; it still yields to the loop), so every run
of the test takes the same path. Flows run in this process against the session's real Prefect
server; the fakes count every request.
"""

# Tests take their fixtures positionally; that is how pytest injects them.
# ruff: noqa: PLR0917

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import pytest_asyncio
import sqlalchemy as sa
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

import db.session as db_session
from blocks.email_resend import ResendEmail
from blocks.slack_webhook import SlackIncomingWebhook
from db.models import AdRun, ExportDelivery, ScheduledJob, ScheduledJobRun
from db.session import DbRetrySettings, retry_transaction, session_scope
from domain.params import AdParameters, ExportSettings, JobParameters
from flows.exports import export_stored_ad_run
from flows.retry_exports import retry_failed_exports
from flows.scheduled_job import run_scheduled_job
from scheduler.commands.export import register
from tests.exports.outage import DatabaseOutage
from tests.flows.support import job_with_templates
from tests.support.http_fake import FakeResend, FakeSlackWebhook

pytestmark = [
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
    pytest.mark.usefixtures("prefect_api", "use_database", "data_dir"),
]


@dataclass
class DbWaits:
    """The waits the database retry policy asked for; `on_wait(n)` runs at the n-th wait."""

    asked: list[float] = field(default_factory=list)
    on_wait: Callable[[int], Awaitable[None]] | None = None


@pytest.fixture
def db_waits(monkeypatch: pytest.MonkeyPatch) -> DbWaits:
    """The database retry policy with 3 attempts and the test's hook as its sleep."""
    waits = DbWaits()

    async def sleep(seconds: float) -> None:
        waits.asked.append(seconds)
        if waits.on_wait is not None:
            await waits.on_wait(len(waits.asked))
        await asyncio.sleep(0)

    monkeypatch.setattr(db_session, "DB_RETRY", DbRetrySettings(attempts=3, sleep=sleep))
    return waits


@pytest_asyncio.fixture
async def outage(db_url: str) -> AsyncIterator[DatabaseOutage]:
    """The app database's outage switch; always ended when the test ends."""
    switch = DatabaseOutage(db_url)
    try:
        yield switch
    finally:
        await switch.end()


def _end_at(outage: DatabaseOutage, wait_number: int) -> Callable[[int], Awaitable[None]]:
    async def hook(n: int) -> None:
        if n == wait_number and outage.active.is_set():
            await outage.end()

    return hook


async def _slack_job(tenant_id: uuid.UUID, fake_slack: FakeSlackWebhook) -> uuid.UUID:
    block = f"slack-{uuid.uuid4().hex[:10]}"
    await SlackIncomingWebhook(url=SecretStr(fake_slack.webhook_url)).asave(block)
    params = JobParameters(
        ad=AdParameters(variations=1),
        export=ExportSettings(destination="slack", slack_webhook_block=block),
    )
    job = await job_with_templates(
        tenant_id, templates=1, template_count=1, parameters=params.model_dump(mode="json")
    )
    return job.id


async def _email_job(tenant_id: uuid.UUID, fake_resend: FakeResend) -> uuid.UUID:
    block = f"email-{uuid.uuid4().hex[:10]}"
    await ResendEmail(
        api_key=fake_resend.api_key,
        from_address="Ads <ads@example.test>",
        base_url=fake_resend.url,
        requests_per_second=50,
    ).save(block)
    params = JobParameters(
        ad=AdParameters(variations=1),
        export=ExportSettings(
            destination="email", email_block=block, email_recipients=["team@example.com"]
        ),
    )
    job = await job_with_templates(
        tenant_id, templates=1, template_count=1, parameters=params.model_dump(mode="json")
    )
    return job.id


async def _run_row(job_id: uuid.UUID) -> ScheduledJobRun:
    async with session_scope() as s:
        return (
            await s.scalars(
                sa.select(ScheduledJobRun).where(ScheduledJobRun.scheduled_job_id == job_id)
            )
        ).one()


async def _delivery(job_run: ScheduledJobRun, channel: str) -> tuple[uuid.UUID, ExportDelivery]:
    async with session_scope() as s:
        ad_run_id = await s.scalar(
            sa.select(AdRun.id).where(AdRun.scheduled_job_run_id == job_run.id)
        )
        assert ad_run_id is not None
        row = await s.scalar(
            sa.select(ExportDelivery).where(
                ExportDelivery.ad_run_id == ad_run_id, ExportDelivery.channel == channel
            )
        )
    assert row is not None
    return ad_run_id, row


async def _job_params(job_id: uuid.UUID) -> dict[str, object]:
    async with session_scope() as s:
        job = await s.get_one(ScheduledJob, job_id)
        return dict(job.parameters)


def _cli(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group, as in scheduler/cli.py
    register(app)
    result = CliRunner().invoke(app, ["export", *args])
    return result.exit_code, result.output


async def test_brief_outage_after_slack_accepted_the_post_is_recorded_once(
    tenant_id, fake_slack: FakeSlackWebhook, db_waits: DbWaits, outage: DatabaseOutage
) -> None:
    job_id = await _slack_job(tenant_id, fake_slack)
    fake_slack.on_delivered = lambda _post: outage.begin_blocking()
    db_waits.on_wait = _end_at(outage, 2)  # the outage outlasts one retry of the record

    state = await run_scheduled_job(job_id, return_state=True)

    assert outage.began == 1 and len(db_waits.asked) == 2  # the record failed twice, then held
    assert state.is_completed(), state.message
    assert len(fake_slack.posts) == 1
    row = await _run_row(job_id)
    assert row.status == "completed" and row.error_message is None
    assert len(row.templates_used or []) == 1
    ad_run_id, delivery = await _delivery(row, "slack")
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert delivery.provider_message_id == "slack-webhook:1-message"

    # A later export and the retry flow send nothing.
    export = JobParameters.model_validate(await _job_params(job_id)).export
    [again] = await export_stored_ad_run(ad_run_id, export)
    assert again.status == "already_sent"
    report = await retry_failed_exports(in_flight_lease=timedelta(0), tenant_id=tenant_id)
    assert report.looked_at == 0
    assert len(fake_slack.posts) == 1


async def test_outage_outlasting_the_retries_leaves_slack_unconfirmed_never_reposted(
    tenant_id,
    fake_slack: FakeSlackWebhook,
    db_waits: DbWaits,
    outage: DatabaseOutage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    job_id = await _slack_job(tenant_id, fake_slack)
    fake_slack.on_delivered = lambda _post: outage.begin_blocking()
    # 3 attempts = 2 waits recording the post (given up); the run's own record is the next
    # write, and the outage ends at its first wait.
    db_waits.on_wait = _end_at(outage, 3)

    state = await run_scheduled_job(job_id, return_state=True)
    fake_slack.on_delivered = None  # one outage only

    assert outage.began == 1 and not outage.active.is_set()
    assert len(fake_slack.posts) == 1
    assert any("sent, not recorded" in r.getMessage() for r in caplog.records)
    # The ads were made and posted: the run is not failed.
    assert state.is_completed(), state.message
    row = await _run_row(job_id)
    assert row.status == "completed"
    ad_run_id, delivery = await _delivery(row, "slack")
    assert (delivery.status, delivery.attempts) == ("pending", 1)  # claimed, outcome unknown

    # The retry flow finds the abandoned claim and flags it; nothing is posted again.
    report = await retry_failed_exports(in_flight_lease=timedelta(0), tenant_id=tenant_id)
    assert (report.looked_at, report.unconfirmed) == (1, 1)
    _ad_run_id, delivery = await _delivery(row, "slack")
    assert delivery.status == "unconfirmed"
    assert delivery.error_message and "sent, not recorded — check" in delivery.error_message
    assert len(fake_slack.posts) == 1
    assert (
        await retry_failed_exports(in_flight_lease=timedelta(0), tenant_id=tenant_id)
    ).looked_at == 0

    # The export command shows it and sends nothing; --force says what it re-sends, then does.
    code, output = await asyncio.to_thread(
        _cli, str(ad_run_id), "-c", "slack", "--tenant", str(tenant_id)
    )
    assert code == 0, output
    assert "unconfirmed" in output and "sent, not recorded — check" in output
    assert len(fake_slack.posts) == 1
    code, output = await asyncio.to_thread(
        _cli, str(ad_run_id), "-c", "slack", "--tenant", str(tenant_id), "--force"
    )
    assert code == 0, output
    assert f"re-sending (--force): {ad_run_id}  slack  sent, not recorded — check" in output
    assert f"{ad_run_id}  slack  sent" in output
    assert len(fake_slack.posts) == 2
    _ad_run_id, delivery = await _delivery(row, "slack")
    assert (delivery.status, delivery.attempts) == ("sent", 2)


async def test_unrecorded_email_is_retried_safely_under_its_idempotency_key(
    tenant_id,
    fake_resend: FakeResend,
    db_waits: DbWaits,
    outage: DatabaseOutage,
) -> None:
    job_id = await _email_job(tenant_id, fake_resend)
    fake_resend.on_delivered = lambda _email: outage.begin_blocking()
    db_waits.on_wait = _end_at(outage, 3)

    state = await run_scheduled_job(job_id, return_state=True)

    assert state.is_completed(), state.message
    assert len(fake_resend.delivered) == 1
    first_id = fake_resend._idempotency  # key -> (body hash, email id)
    [(key, (_digest, email_id))] = first_id.items()
    row = await _run_row(job_id)
    _ad_run_id, delivery = await _delivery(row, "email")
    assert delivery.status == "pending"

    # Resend answers the repeated key with the original email: recorded, not sent twice.
    report = await retry_failed_exports(in_flight_lease=timedelta(0), tenant_id=tenant_id)
    assert (report.looked_at, report.sent) == (1, 1)
    assert len(fake_resend.posts) == 2 and len(fake_resend.delivered) == 1
    assert fake_resend.posts[1].headers["idempotency-key"] == key
    _ad_run_id, delivery = await _delivery(row, "email")
    assert (delivery.status, delivery.provider_message_id) == ("sent", email_id)


async def test_integrity_errors_are_never_retried(tenant_id, db_waits: DbWaits) -> None:
    calls = 0

    async def violate(session) -> None:
        nonlocal calls
        calls += 1
        # A delivery for neither an ad run nor a job run breaks the `one_subject` CHECK.
        session.add(ExportDelivery(tenant_id=tenant_id, channel="slack"))
        await session.flush()

    with pytest.raises(sa.exc.IntegrityError):
        await retry_transaction(violate, what="bad insert")
    assert calls == 1 and db_waits.asked == []


async def test_a_transaction_cut_mid_way_is_run_again_whole(
    tenant_id, db_waits: DbWaits, outage: DatabaseOutage
) -> None:
    job_id = await _slack_job(tenant_id, FakeSlackWebhook())
    db_waits.on_wait = _end_at(outage, 1)
    calls = 0

    async def note(session) -> int:
        nonlocal calls
        calls += 1
        job = await session.get_one(ScheduledJob, job_id, with_for_update=True)
        if calls == 1:
            await outage.begin()  # the server drops this very session mid-transaction
        job.pause_note = f"written by attempt {calls}"
        await session.flush()
        return calls

    assert await retry_transaction(note, what="note") == 2
    assert outage.began == 1 and len(db_waits.asked) == 1
    async with session_scope() as s:
        job = await s.get_one(ScheduledJob, job_id)
    assert job.pause_note == "written by attempt 2"
