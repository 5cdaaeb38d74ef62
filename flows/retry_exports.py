"""`retry_exports`: sends again the exports that failed for a reason a later try can fix.

Deployed from prefect.yaml to run every `RETRY_EXPORTS_EVERY_MINUTES` (10) minutes; this is what
keeps the promise in a retryable failure's note ("the retry-exports flow tries again"). One pass:

1. finds deliveries that failed `retryable` (a provider 429/5xx, a network error, the database
   unreachable while claiming), with fewer than `RETRY_EXPORTS_MAX_ATTEMPTS` attempts and first
   claimed less than 23 h ago, plus claims left pending past their lease (the sender died or
   could not record its outcome);
2. exports each again through the same tasks a run uses, to that one channel only, with the
   settings of the run's job (or, for a manual `create-ads` run, of its flow run). The claim
   rules hold: a stale Slack claim becomes `unconfirmed` ("sent, not recorded — check") and is
   not posted again; an email goes out under its original Resend idempotency key;
3. marks `permanent` the retryable failures it will no longer try, saying so in their note.

Nothing already `sent` or `unconfirmed` is touched. A second pass right after finds nothing new to
send (each delivery's attempt count grows, and a delivery being sent is left to its sender).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError, ObjectNotFound
from pydantic import BaseModel, Field, ValidationError

from db.models import AdRun, ExportDelivery, ScheduledJob, ScheduledJobRun
from db.queries.deliveries import (
    IDEMPOTENCY_WINDOW,
    IN_FLIGHT_LEASE,
    deliveries_to_retry,
    give_up_retries,
    mark_failed,
)
from db.session import retry_transaction, session_scope
from domain.params import ExportSettings, JobParameters
from flows.exports import (
    RETRY_EXPORTS_MAX_ATTEMPTS,
    DeliveryOutcome,
    export_stored_ad_run,
    export_stored_digest,
)


class RetryExportsReport(BaseModel):
    """What one pass did, by the deliveries' outcome."""

    looked_at: int = 0
    sent: int = 0
    failed: int = 0
    unconfirmed: int = 0
    skipped: int = 0
    gave_up: int = 0


async def _export_settings(delivery: ExportDelivery) -> dict[str, Any] | None:
    """The export settings the delivery's run used, as a dict (None when none are known)."""
    async with session_scope() as session:
        job_id: uuid.UUID | None = None
        flow_run_id: uuid.UUID | None = None
        if delivery.ad_run_id is not None:
            ad_run = await session.get(AdRun, delivery.ad_run_id)
            if ad_run is not None:
                job_id, flow_run_id = ad_run.scheduled_job_id, ad_run.flow_run_id
        elif delivery.scheduled_job_run_id is not None:
            job_run = await session.get(ScheduledJobRun, delivery.scheduled_job_run_id)
            job_id = job_run.scheduled_job_id if job_run is not None else None
        job = await session.get(ScheduledJob, job_id) if job_id is not None else None
    if job is not None:
        return JobParameters.model_validate(job.parameters).export.model_dump()
    if flow_run_id is None:
        return None
    # A manual run (create-ads) keeps its export settings as a flow-run parameter.
    try:
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return None
    export = (flow_run.parameters or {}).get("export")
    return dict(export) if isinstance(export, dict) else None


async def _give_up(delivery: ExportDelivery, reason: str) -> None:
    await retry_transaction(
        lambda session: mark_failed(
            session, delivery.id, error_message=reason, error_kind="permanent"
        ),
        what="delivery given up",
    )


async def _retry_one(delivery: ExportDelivery, lease: timedelta) -> list[DeliveryOutcome]:
    channel = delivery.channel
    values = await _export_settings(delivery)
    if values is None:
        await _give_up(
            delivery,
            f"{delivery.error_message or 'not sent'} — no export settings are known for this "
            f"run, so it is not retried; send it with `ad-scheduler export <run> --channel "
            f"{channel}`",
        )
        return []
    values["destination"] = channel
    values["email_mode"] = "digest" if delivery.scheduled_job_run_id is not None else "per_ad_run"
    try:
        export = ExportSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        await _give_up(
            delivery, f"not retried: the {channel} export is not configured ({problems})"
        )
        return []
    if delivery.ad_run_id is not None:
        return await export_stored_ad_run(delivery.ad_run_id, export, in_flight_lease=lease)
    assert delivery.scheduled_job_run_id is not None  # a delivery has exactly one subject
    return await export_stored_digest(delivery.scheduled_job_run_id, export, in_flight_lease=lease)


async def retry_failed_exports(
    *,
    max_attempts: int = RETRY_EXPORTS_MAX_ATTEMPTS,
    max_age: timedelta = IDEMPOTENCY_WINDOW,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
    tenant_id: uuid.UUID | None = None,
) -> RetryExportsReport:
    """One pass over the deliveries to retry (see the module docstring).

    Args:
        max_attempts: Attempts (the run's own included) after which a delivery is left alone.
        max_age: Only deliveries first claimed less than this ago are retried (Resend keeps an
            idempotency key 24 h).
        in_flight_lease: A pending claim older than this is taken to be abandoned.
        tenant_id: Only this tenant's deliveries (default: every tenant's).

    Returns:
        How many deliveries were looked at, and what became of them.
    """
    try:
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except MissingContextError:  # called outside a flow (a script, the CLI)
        logger = logging.getLogger("ad_scheduler.retry_exports")
    report = RetryExportsReport()
    async with session_scope() as session:
        todo = await deliveries_to_retry(
            session,
            max_attempts=max_attempts,
            max_age=max_age,
            in_flight_lease=in_flight_lease,
            tenant_id=tenant_id,
        )
    for delivery in todo:
        report.looked_at += 1
        try:
            outcomes = await _retry_one(delivery, in_flight_lease)
        except Exception as exc:  # one delivery never stops the others
            logger.error("retrying delivery %s failed: %s", delivery.id, type(exc).__name__)
            report.failed += 1
            continue
        for outcome in outcomes:
            if outcome.status in ("sent", "already_sent"):
                report.sent += 1
            elif outcome.status == "failed":
                report.failed += 1
            elif outcome.status == "unconfirmed":
                report.unconfirmed += 1
            else:
                report.skipped += 1
    async with session_scope() as session:
        report.gave_up = await give_up_retries(
            session, max_attempts=max_attempts, max_age=max_age, tenant_id=tenant_id
        )
    logger.info("retry-exports: %s", report.model_dump())
    return report


@flow(name="retry-exports", log_prints=False)
async def retry_exports(
    max_attempts: Annotated[int, Field(ge=1, le=50)] = RETRY_EXPORTS_MAX_ATTEMPTS,
    lease_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 30,
    tenant_id: uuid.UUID | None = None,
) -> RetryExportsReport:
    """Send again the exports that failed for a retryable reason (scheduled every 10 minutes).

    Args:
        max_attempts: Attempts per delivery (the run's own included) before giving up.
        lease_minutes: A delivery claimed this long ago and still pending is taken to be
            abandoned by its sender.
        tenant_id: Only this tenant's deliveries (default: every tenant's).

    Returns:
        What the pass did.
    """
    return await retry_failed_exports(
        max_attempts=max_attempts,
        in_flight_lease=timedelta(minutes=lease_minutes),
        tenant_id=tenant_id,
    )


if __name__ == "__main__":
    import asyncio

    asyncio.run(retry_exports())
