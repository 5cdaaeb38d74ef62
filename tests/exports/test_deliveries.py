"""Delivery records on both backends: claim, in-flight guard, sent once, forced re-sends."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from db.models import ExportDelivery
from db.queries.deliveries import (
    claim_delivery,
    get_delivery,
    mark_failed,
    mark_sent,
)
from db.session import session_scope
from tests.exports.conftest import seed_runs


async def test_delivery_lifecycle(db_url: str, tenant_id, storage_root: Path) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=1)
    subject = {"tenant_id": tenant_id, "channel": "slack", "ad_run_id": run.ad_run_id}

    async with session_scope(db_url) as session:
        first = await claim_delivery(session, **subject)
    async with session_scope(db_url) as session:
        concurrent = await claim_delivery(session, **subject)
    assert (first.attempt, first.already_sent, first.in_flight) == (1, False, False)
    assert concurrent.in_flight and concurrent.attempt == 0

    async with session_scope(db_url) as session:
        await mark_failed(session, first.delivery_id, error_message="boom", error_kind="retryable")
    async with session_scope(db_url) as session:
        second = await claim_delivery(session, **subject)
        await mark_sent(session, second.delivery_id, provider_message_id="slack-webhook:1-message")
    assert second.attempt == 2 and second.delivery_id == first.delivery_id

    async with session_scope(db_url) as session:
        again = await claim_delivery(session, **subject)
    assert again.already_sent and again.provider_message_id == "slack-webhook:1-message"
    assert again.sent_at is not None

    # A forced re-send that fails leaves the record "sent" (the first send did happen).
    async with session_scope(db_url) as session:
        forced = await claim_delivery(session, **subject, force=True)
    async with session_scope(db_url) as session:
        await mark_failed(session, forced.delivery_id, error_message="nope", error_kind="permanent")
        row = await get_delivery(session, channel="slack", ad_run_id=run.ad_run_id)
    assert forced.forced and forced.attempt == 3
    assert row is not None and (row.status, row.error_kind, row.attempts) == (
        "sent",
        "permanent",
        3,
    )

    count = await _count(db_url, run.ad_run_id)
    assert count == 1


async def test_a_stale_claim_can_be_taken_over(db_url: str, tenant_id, storage_root: Path) -> None:
    [run] = await seed_runs(db_url, tenant_id, storage_root, ads=1)
    subject = {"tenant_id": tenant_id, "channel": "email", "job_run_id": run.job_run_id}
    async with session_scope(db_url) as session:
        first = await claim_delivery(session, **subject)
    async with session_scope(db_url) as session:
        assert (await claim_delivery(session, **subject)).in_flight
    assert first.attempt == 1
    # The sender died: once its lease is over (here: at once), the delivery can be claimed again.
    # (updated_at cannot be backdated: PostgreSQL's trigger keeps it current.)
    async with session_scope(db_url) as session:
        retaken = await claim_delivery(session, **subject, in_flight_lease=timedelta(0))
    assert not retaken.in_flight and retaken.attempt == 2


async def _count(db_url: str, ad_run_id: object) -> int:
    async with session_scope(db_url) as session:
        return int(
            await session.scalar(
                sa.select(sa.func.count())
                .select_from(ExportDelivery)
                .where(ExportDelivery.ad_run_id == ad_run_id)
            )
            or 0
        )
