"""Delivery records: the bookkeeping that makes an export happen once (`db.queries.deliveries`).

Every export is a delivery row per (ad run or job run, channel), claimed before sending. A row
already `sent` is reported `already_sent` and nothing goes out, unless the caller forces a
manual re-send. The claim and the outcome are short writes retried by the one database retry
policy (`db.session.retry_transaction`, connection errors only). A send whose outcome still
cannot be recorded is returned `unconfirmed` ("sent, not recorded — check"); its row stays
claimed, and whoever next looks at it never re-posts it to Slack (an email is safely re-sent
under the same Resend idempotency key). Failures are recorded on the delivery (and in the ad
run's `error_message`) as `permanent` or `retryable`; the generated ads are never touched.

Also here: reading stored ad runs back into `AdRunContent`, for a re-send after the run (the
`retry-exports` flow, `ad-scheduler export`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from prefect import get_run_logger
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from blocks.errors import DeliveryError, ErrorKind
from config import get_settings
from db.models import AdRun, AdTemplate, Brand, GeneratedAd, Product, ScheduledJob, ScheduledJobRun
from db.queries.deliveries import (
    IN_FLIGHT_LEASE,
    UNCONFIRMED_LABEL,
    Channel,
    DeliveryClaim,
    claim_delivery,
    mark_failed,
    mark_sent,
)
from db.session import is_connection_error, retry_transaction, session_scope
from domain.redact import redact
from domain.retry import DEFAULT_RETRY
from domain.vocab import ExportOutcome
from flows.exports.content import AdRunContent, ExportedAd, ad_key, flow_run_url

#: What a retryable failure's note promises; `flows/retry_exports.py` keeps the promise.
RETRY_EXPORTS_EVERY_MINUTES = 10
RETRY_EXPORTS_MAX_ATTEMPTS = 6
RETRIED_LATER = (
    f"the retry-exports flow tries again (every {RETRY_EXPORTS_EVERY_MINUTES} min, "
    f"up to {RETRY_EXPORTS_MAX_ATTEMPTS} attempts within 23 h)"
)
#: Longest failure reason stored on a delivery (after redaction).
MAX_ERROR_CHARS = 1000

Logger = Any  # a logging.Logger or Prefect's run logger adapter


class DeliveryOutcome(BaseModel):
    """What happened to one export of one run to one channel.

    Attributes:
        channel: `email` or `slack`.
        status: `domain.vocab.ExportOutcome`: `sent`, `failed`, `unconfirmed` (sent, not
            recorded — check: it may have gone out but that could not be recorded; never
            re-sent automatically), `already_sent` (an earlier run sent it; nothing went out)
            or `skipped` (nothing to send).
        provider_message_id: Resend's email id; for Slack, how many messages were posted.
        error: Why it failed or was skipped (never contains a secret).
        error_kind: `permanent` (needs a person: reconfigure, fix data) or `retryable`.
    """

    channel: Channel
    status: ExportOutcome
    provider_message_id: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None


class ExportError(Exception):
    """An export that cannot be made as configured (missing block, unreadable storage, …)."""

    def __init__(self, message: str, kind: ErrorKind = "permanent") -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind


def failure_lines(outcomes: Sequence[DeliveryOutcome]) -> list[str]:
    """The failed outcomes as "<channel>: <whole reason>" lines (never a secret)."""
    return [f"{o.channel}: {o.error}" for o in outcomes if o.status == "failed"]


def skipped(channels: Sequence[Channel], reason: str) -> list[DeliveryOutcome]:
    """An outcome `skipped` with `reason` per channel."""
    return [DeliveryOutcome(channel=c, status="skipped", error=reason) for c in channels]


def provider_failure(error: DeliveryError) -> tuple[str, ErrorKind]:
    """The reason stored for a provider's refusal, with what happens next."""
    message = error.message
    if error.retryable and not DEFAULT_RETRY.honours(error.retry_after):
        message += f"; asked to wait {error.retry_after:.0f}s, longer than we wait"
    if error.retryable:
        message += f"; {RETRIED_LATER}"
    return message, error.kind


Send = Callable[[DeliveryClaim], Awaitable[str]]


async def deliver(
    *,
    channel: Channel,
    tenant_id: UUID,
    ad_run_id: UUID | None,
    job_run_id: UUID | None,
    force: bool,
    send: Send,
    secrets: Sequence[str],
    logger: Logger,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> DeliveryOutcome:
    """Claim the delivery, send through `send` (returns the provider's id), record the outcome.

    Never raises for provider, network or database-connection errors: they become the outcome.

    Args:
        channel: `email` or `slack`.
        tenant_id: The run's tenant.
        ad_run_id: The ad run exported (or None for a job run's digest).
        job_run_id: The job run whose digest is exported (or None).
        force: Send again even what was already sent (a manual re-send).
        send: Sends once the delivery is claimed; raises `DeliveryError` or `ExportError`.
        secrets: Values redacted from any error text (API keys, webhook URLs).
        logger: Where the outcome is logged.
        in_flight_lease: How long a claimed, still pending delivery is left to its sender.
    """
    subject = f"ad run {ad_run_id}" if ad_run_id is not None else f"job run {job_run_id}"
    try:
        claim = await retry_transaction(
            lambda session: claim_delivery(
                session,
                tenant_id=tenant_id,
                channel=channel,
                ad_run_id=ad_run_id,
                job_run_id=job_run_id,
                force=force,
                in_flight_lease=in_flight_lease,
            ),
            what=f"{channel} delivery claim",
        )
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        logger.error("%s of %s not sent: the database is unreachable", channel, subject)
        return DeliveryOutcome(
            channel=channel,
            status="failed",
            error="not sent: the database was unreachable, so the send could not be claimed",
            error_kind="retryable",
        )
    if claim.unconfirmed:
        logger.warning("%s of %s: %s", channel, subject, claim.note or UNCONFIRMED_LABEL)
        return DeliveryOutcome(
            channel=channel, status="unconfirmed", error=claim.note or UNCONFIRMED_LABEL
        )
    if claim.already_sent:
        logger.info(
            "%s of %s was already sent (%s); not sending again",
            channel,
            subject,
            claim.provider_message_id,
        )
        return DeliveryOutcome(
            channel=channel, status="already_sent", provider_message_id=claim.provider_message_id
        )
    if claim.in_flight:
        logger.warning(
            "%s of %s is being sent by another run; not sending it too", channel, subject
        )
        return DeliveryOutcome(
            channel=channel,
            status="skipped",
            error=f"another export of this {subject.rsplit(' ', 1)[0]} is in progress",
        )
    if claim.forced:
        logger.warning("Manual re-send: %s of %s goes out again (forced)", channel, subject)

    error: str
    kind: ErrorKind
    try:
        provider_id = await send(claim)
    except DeliveryError as exc:
        error, kind = provider_failure(exc)
    except ExportError as exc:
        error, kind = exc.message, exc.kind
    except Exception as exc:
        # Anything else (the Prefect API for the rate limit, a bug) must not lose the run either.
        error = f"unexpected {type(exc).__name__} while exporting: {exc}"
        kind = "retryable"
    else:
        return await _record_sent(
            channel, subject, claim, provider_id, ad_run_id=ad_run_id, logger=logger
        )

    error = redact(error, secrets, limit=MAX_ERROR_CHARS)
    logger.error("%s of %s failed (%s): %s", channel, subject, kind, error)
    try:
        await retry_transaction(
            lambda session: mark_failed(
                session, claim.delivery_id, error_message=error, error_kind=kind
            ),
            what=f"{channel} delivery failure",
        )
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # Nothing went out; the row stays claimed, and the claim's lease says what happens next.
        logger.error(
            "could not record the failure of %s of %s: database unreachable", channel, subject
        )
    if ad_run_id is not None:
        await _note_on_ad_run(ad_run_id, channel, error)
    return DeliveryOutcome(channel=channel, status="failed", error=error, error_kind=kind)


async def _record_sent(
    channel: Channel,
    subject: str,
    claim: DeliveryClaim,
    provider_id: str,
    *,
    ad_run_id: UUID | None,
    logger: Logger,
) -> DeliveryOutcome:
    """Record a send the provider accepted; through a brief outage, else say it is unrecorded."""
    try:
        await retry_transaction(
            lambda session: mark_sent(session, claim.delivery_id, provider_message_id=provider_id),
            what=f"{channel} delivery sent",
        )
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # The row stays claimed (pending). Nobody re-posts it to Slack: once its lease is over,
        # the next look (retry-exports, an export) sets it `unconfirmed` for a person to check.
        # An email goes again under the same idempotency key, which Resend answers with this
        # very email — so that retry records it `sent` without a second email.
        then = (
            "it will not be posted again automatically"
            if channel == "slack"
            else "a retry re-sends it under the same Resend idempotency key, which returns this "
            "email instead of sending another"
        )
        note = (
            f"{UNCONFIRMED_LABEL}: {channel} accepted it ({provider_id}) but the database was "
            f"unreachable, so it is not recorded; {then}"
        )
        logger.error("%s of %s: %s", channel, subject, note)
        return DeliveryOutcome(
            channel=channel, status="unconfirmed", provider_message_id=provider_id, error=note
        )
    if ad_run_id is not None:
        await _note_on_ad_run(ad_run_id, channel, None)
    return DeliveryOutcome(channel=channel, status="sent", provider_message_id=provider_id)


async def _note_on_ad_run(ad_run_id: UUID, channel: Channel, error: str | None) -> None:
    """Keep the ad run's `error_message` in step with its export failures (never its ads)."""
    prefix = f"export to {channel} failed: "

    async def note(session: AsyncSession) -> None:
        run = await session.get(AdRun, ad_run_id, with_for_update=True)
        if run is None:
            return
        current = run.error_message
        if error is not None and (current is None or current.startswith("export to ")):
            run.error_message = (prefix + error)[:2000]
        elif error is None and current is not None and current.startswith(prefix):
            run.error_message = None

    try:
        await retry_transaction(note, what="ad run export note")
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        # The delivery row is what counts; the ad run's note is a convenience.
        get_run_logger().warning(
            "could not note the %s export on ad run %s: database unreachable", channel, ad_run_id
        )


async def run_labels(
    tenant_id: UUID, job_id: UUID | None, templates: Sequence[str], ad_run_ids: Sequence[UUID]
) -> tuple[str, dict[str, str], dict[UUID, datetime]]:
    """The job's name ("manual run" without a job), the templates' catalog names, and when
    each ad run completed.

    The one read an in-memory export makes per run: the pipeline holds none of these, and an
    email must say exactly what a later re-send from the rows says (same idempotency key,
    same body).
    """
    async with session_scope() as session:
        job_name = None
        if job_id is not None:
            job_name = await session.scalar(
                sa.select(ScheduledJob.name).where(ScheduledJob.id == job_id)
            )
        rows = (
            await session.execute(
                sa.select(AdTemplate.storage_name, AdTemplate.name).where(
                    AdTemplate.tenant_id == tenant_id,
                    AdTemplate.storage_name.in_(list(templates)),
                )
            )
        ).all()
        finished = (
            await session.execute(
                sa.select(AdRun.id, AdRun.completed_at, AdRun.created_at).where(
                    AdRun.id.in_(list(ad_run_ids))
                )
            )
        ).all()
    return (
        job_name or "manual run",
        {storage: name for storage, name in rows if name},
        {run_id: completed_at or created_at for run_id, completed_at, created_at in finished},
    )


async def load_ad_run_contents(
    where: sa.ColumnElement[bool],
) -> list[tuple[AdRunContent, str]]:
    """Stored ad runs matching `where`, oldest first, as (export content, ad run status).

    For a re-send after the run; a run's own export uses what the pipeline holds instead.
    """
    ui_url = get_settings().prefect_ui_url
    async with session_scope() as session:
        runs = list(
            (await session.scalars(sa.select(AdRun).where(where).order_by(AdRun.created_at))).all()
        )
        contents: list[tuple[AdRunContent, str]] = []
        for run in runs:
            ads = (
                await session.scalars(
                    sa.select(GeneratedAd)
                    .where(GeneratedAd.ad_run_id == run.id)
                    # approval hook: an ad a person rejected is never exported
                    .where(
                        sa.or_(
                            GeneratedAd.review_status.is_(None),
                            GeneratedAd.review_status != "rejected",
                        )
                    )
                    .order_by(GeneratedAd.variation_index)
                )
            ).all()
            product = await session.get_one(Product, run.product_id)
            brand = await session.get_one(Brand, product.brand_id)
            template_name = await session.scalar(
                sa.select(AdTemplate.name).where(
                    AdTemplate.tenant_id == run.tenant_id,
                    AdTemplate.storage_name == run.template_storage_name,
                )
            )
            job_name = "manual run"
            if run.scheduled_job_id is not None:
                job_name = (
                    await session.scalar(
                        sa.select(ScheduledJob.name).where(ScheduledJob.id == run.scheduled_job_id)
                    )
                ) or job_name
            flow_run_id = run.flow_run_id
            if flow_run_id is None and run.scheduled_job_run_id is not None:
                flow_run_id = await session.scalar(
                    sa.select(ScheduledJobRun.flow_run_id).where(
                        ScheduledJobRun.id == run.scheduled_job_run_id
                    )
                )
            content = AdRunContent(
                ad_run_id=run.id,
                tenant_id=run.tenant_id,
                product_id=product.id,
                product_name=product.name,
                brand_name=brand.name,
                template_storage_name=run.template_storage_name,
                template_label=template_name or run.template_storage_name,
                job_id=run.scheduled_job_id,
                job_name=job_name,
                flow_run_id=flow_run_id,
                when=run.completed_at or run.created_at,
                ads=tuple(
                    ExportedAd(
                        storage_path=ad.storage_path,
                        headline=ad.headline or "",
                        content_type=ad.content_type,
                        key=ad_key(run.id, ad.variation_index),
                    )
                    for ad in ads
                ),
                run_url=flow_run_url(ui_url, flow_run_id),
            )
            contents.append((content, run.status))
        return contents
