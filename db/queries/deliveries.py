"""Export delivery records: one row per (ad run or job run, channel).

A row goes pending → sent (with the provider's id) or failed (reason, `permanent` or
`retryable`); a failed row can be claimed again and goes back to pending. A row claimed less than
`IN_FLIGHT_LEASE` ago and still pending is being sent by someone else right now, so a second
claimer stands back instead of posting the same message twice; after the lease (the sender died),
it is not knowable whether it went out: a Slack post (no idempotency key) is then set
`unconfirmed` — "sent, not recorded — check" — and never posted again automatically; an email is
claimed again, because it is re-sent with the same Resend idempotency key and Resend answers a
repeated key with the original email (for 24 hours: after `IDEMPOTENCY_WINDOW` an email is set
`unconfirmed` too). A row already `sent` or `unconfirmed` is never claimed again unless the caller
forces it (a manual re-send, logged here): this is what keeps Slack from double-posting when a
run is re-exported.

Claims lock the row (`SELECT … FOR UPDATE` on PostgreSQL; SQLite transactions here begin
IMMEDIATE, so writers are serialised anyway), and creation races end on the unique constraints
(`ad_run_id, channel` and `scheduled_job_run_id, channel`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ExportDelivery
from db.types import utcnow
from domain.vocab import DELIVERY_OUT_STATUSES, Channel, ErrorKind

logger = logging.getLogger(__name__)

#: How long a claimed, still pending delivery is taken to be in flight.
IN_FLIGHT_LEASE = timedelta(minutes=30)
#: How long after its first claim an email may be sent again with the same idempotency key
#: (Resend keeps keys 24 hours; an hour is kept in hand).
IDEMPOTENCY_WINDOW = timedelta(hours=23)
#: What people read for an `unconfirmed` delivery.
UNCONFIRMED_LABEL = "sent, not recorded — check"


@dataclass(frozen=True)
class DeliveryClaim:
    """The outcome of claiming a delivery.

    Attributes:
        delivery_id: The delivery row.
        attempt: The attempt number now claimed (1 for the first send); 0 when not claimed.
        already_sent: True when the delivery was sent before and no re-send was forced.
        provider_message_id: The provider's id of the earlier send, when already sent.
        sent_at: When the earlier send happened, when already sent.
        forced: True when an earlier successful send is being repeated on purpose.
        in_flight: True when another sender claimed it moments ago and has not finished.
        unconfirmed: True when it may have gone out but that was never recorded; nothing is
            sent without `force` (the delivery is `unconfirmed`, its note says what to check).
        note: The delivery's note when `unconfirmed`.
    """

    delivery_id: uuid.UUID
    attempt: int
    already_sent: bool
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    forced: bool = False
    in_flight: bool = False
    unconfirmed: bool = False
    note: str | None = None


def unconfirmed_note(channel: str, claimed_at: datetime | None) -> str:
    """The note of an `unconfirmed` delivery: what happened and what a person should do."""
    when = claimed_at.isoformat(timespec="seconds") if claimed_at else "an unknown time"
    return (
        f"{UNCONFIRMED_LABEL}: the {channel} send claimed at {when} may have gone out, but its "
        "outcome was never recorded (database unreachable or sender stopped); it is not sent "
        f"again automatically. Look in {'Slack' if channel == 'slack' else 'the inbox'}; if it "
        "is missing, re-send it with `ad-scheduler export <run> --channel "
        f"{channel} --force`"
    )


def _subject_filter(
    ad_run_id: uuid.UUID | None, job_run_id: uuid.UUID | None, channel: Channel
) -> sa.ColumnElement[bool]:
    if (ad_run_id is None) == (job_run_id is None):
        raise ValueError("a delivery is for exactly one of ad_run_id and job_run_id")
    subject = (
        ExportDelivery.ad_run_id == ad_run_id
        if ad_run_id is not None
        else ExportDelivery.scheduled_job_run_id == job_run_id
    )
    return sa.and_(subject, ExportDelivery.channel == channel)


async def get_delivery(
    session: AsyncSession,
    *,
    channel: Channel,
    ad_run_id: uuid.UUID | None = None,
    job_run_id: uuid.UUID | None = None,
    for_update: bool = False,
) -> ExportDelivery | None:
    """The delivery of an ad run (or job run) to a channel, if one was recorded."""
    query = sa.select(ExportDelivery).where(_subject_filter(ad_run_id, job_run_id, channel))
    if for_update:
        query = query.with_for_update()
    result: ExportDelivery | None = await session.scalar(query)
    return result


async def get_or_create_delivery(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    channel: Channel,
    ad_run_id: uuid.UUID | None = None,
    job_run_id: uuid.UUID | None = None,
) -> ExportDelivery:
    """The delivery row for (subject, channel), created pending if missing, locked for update."""
    found = await get_delivery(
        session, channel=channel, ad_run_id=ad_run_id, job_run_id=job_run_id, for_update=True
    )
    if found is not None:
        return found
    delivery = ExportDelivery(
        tenant_id=tenant_id,
        ad_run_id=ad_run_id,
        scheduled_job_run_id=job_run_id,
        channel=channel,
        status="pending",
        attempts=0,
    )
    try:
        async with session.begin_nested():
            session.add(delivery)
    except IntegrityError:
        # Another worker created it first; use theirs.
        found = await get_delivery(
            session, channel=channel, ad_run_id=ad_run_id, job_run_id=job_run_id, for_update=True
        )
        if found is None:
            raise
        return found
    return delivery


async def claim_delivery(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    channel: Channel,
    ad_run_id: uuid.UUID | None = None,
    job_run_id: uuid.UUID | None = None,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> DeliveryClaim:
    """Claim the next attempt of a delivery, unless it was already sent.

    Args:
        session: An open session; the claim is committed with its transaction.
        tenant_id: The tenant of the subject.
        channel: `email` or `slack`.
        ad_run_id: The ad run exported (per-ad-run exports).
        job_run_id: The job run exported (digests).
        force: Claim even a delivery already sent or in flight (a manual re-send; logged).
        in_flight_lease: How long a pending claim is taken to be in flight.

    Returns:
        The claim: `already_sent` with the earlier send's details, `in_flight`, or the attempt
        claimed.
    """
    delivery = await get_or_create_delivery(
        session, tenant_id=tenant_id, channel=channel, ad_run_id=ad_run_id, job_run_id=job_run_id
    )
    forced = False
    now = utcnow()
    if not force and delivery.status == "pending" and delivery.attempts > 0:
        if delivery.updated_at > now - in_flight_lease:
            return DeliveryClaim(
                delivery_id=delivery.id, attempt=0, already_sent=False, in_flight=True
            )
        # The sender claimed it and was never heard of again: it may have sent. Only an email
        # within its idempotency window can safely go again (Resend dedups the key).
        if channel != "email" or delivery.created_at <= now - IDEMPOTENCY_WINDOW:
            delivery.status = "unconfirmed"
            delivery.error_message = unconfirmed_note(channel, delivery.updated_at)
            delivery.error_kind = "permanent"
            await session.flush()
            logger.warning(
                "Delivery %s (%s) set unconfirmed: %s", delivery.id, channel, "stale claim"
            )
    if delivery.status == "unconfirmed" and not force:
        return DeliveryClaim(
            delivery_id=delivery.id,
            attempt=0,
            already_sent=False,
            unconfirmed=True,
            note=delivery.error_message,
        )
    if delivery.status in DELIVERY_OUT_STATUSES:
        if delivery.status == "sent" and not force:
            return DeliveryClaim(
                delivery_id=delivery.id,
                attempt=0,
                already_sent=True,
                provider_message_id=delivery.provider_message_id,
                sent_at=delivery.sent_at,
            )
        forced = True
        logger.warning(
            "Re-sending delivery %s (%s of %s %s, %s) on request; it was sent at %s as %s",
            delivery.id,
            channel,
            "ad run" if ad_run_id else "job run",
            ad_run_id or job_run_id,
            delivery.status,
            delivery.sent_at.isoformat() if delivery.sent_at else "?",
            delivery.provider_message_id,
        )
    delivery.attempts = (delivery.attempts or 0) + 1
    if not forced:
        # A forced re-send keeps `sent` (or `unconfirmed`): the earlier send may have happened,
        # whatever this one does.
        delivery.status = "pending"
        delivery.error_message = None
        delivery.error_kind = None
    await session.flush()
    return DeliveryClaim(
        delivery_id=delivery.id, attempt=delivery.attempts, already_sent=False, forced=forced
    )


async def mark_sent(
    session: AsyncSession, delivery_id: uuid.UUID, *, provider_message_id: str | None
) -> None:
    """Record a successful send."""
    await session.execute(
        sa.update(ExportDelivery)
        .where(ExportDelivery.id == delivery_id)
        .values(
            status="sent",
            provider_message_id=provider_message_id,
            sent_at=utcnow(),
            error_message=None,
            error_kind=None,
            updated_at=utcnow(),
        )
    )


async def mark_failed(
    session: AsyncSession, delivery_id: uuid.UUID, *, error_message: str, error_kind: ErrorKind
) -> None:
    """Record a failed send: why, and whether a later attempt can succeed.

    A delivery already `sent` or `unconfirmed` (a forced re-send that failed) keeps its status,
    with the error noted.
    """
    await session.execute(
        sa.update(ExportDelivery)
        .where(ExportDelivery.id == delivery_id)
        .values(
            status=sa.case(
                (ExportDelivery.status.in_(DELIVERY_OUT_STATUSES), ExportDelivery.status),
                else_="failed",
            ),
            error_message=error_message[:2000],
            error_kind=error_kind,
            updated_at=utcnow(),
        )
    )


async def deliveries_to_retry(
    session: AsyncSession,
    *,
    max_attempts: int,
    max_age: timedelta = IDEMPOTENCY_WINDOW,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
    tenant_id: uuid.UUID | None = None,
    limit: int = 200,
) -> list[ExportDelivery]:
    """Deliveries an automatic retry should look at again, oldest first.

    Failed ones whose error is `retryable`, with fewer than `max_attempts` attempts and first
    claimed less than `max_age` ago; and claims left pending past `in_flight_lease` (their
    claim turns them `unconfirmed`, or re-sends an email under its idempotency key). Every
    tenant's, or one tenant's.
    """
    now = utcnow()
    failed = sa.and_(
        ExportDelivery.status == "failed",
        ExportDelivery.error_kind == "retryable",
        ExportDelivery.attempts < max_attempts,
        ExportDelivery.created_at > now - max_age,
    )
    stale = sa.and_(
        ExportDelivery.status == "pending",
        ExportDelivery.attempts > 0,
        ExportDelivery.updated_at <= now - in_flight_lease,
    )
    query = sa.select(ExportDelivery).where(sa.or_(failed, stale))
    if tenant_id is not None:
        query = query.where(ExportDelivery.tenant_id == tenant_id)
    rows = await session.scalars(query.order_by(ExportDelivery.created_at).limit(limit))
    return list(rows.all())


async def give_up_retries(
    session: AsyncSession,
    *,
    max_attempts: int,
    max_age: timedelta,
    tenant_id: uuid.UUID | None = None,
) -> int:
    """Make retryable failures that automatic retries will not try again `permanent`.

    Their note says so; `ad-scheduler export` can still send them. Returns how many changed.
    """
    now = utcnow()
    result = await session.execute(
        sa.update(ExportDelivery)
        .where(
            ExportDelivery.status == "failed",
            ExportDelivery.error_kind == "retryable",
            sa.true() if tenant_id is None else ExportDelivery.tenant_id == tenant_id,
            sa.or_(
                ExportDelivery.attempts >= max_attempts,
                ExportDelivery.created_at <= now - max_age,
            ),
        )
        .values(
            error_kind="permanent",
            error_message=sa.func.substr(
                sa.func.coalesce(ExportDelivery.error_message, "")
                + f" — automatic retries gave up (at most {max_attempts} attempts"
                f" within {int(max_age.total_seconds() // 3600)} h); send it with"
                " `ad-scheduler export`",
                1,
                2000,
            ),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
