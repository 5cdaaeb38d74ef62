"""Coalesced job board refreshes (`job_board_refreshes`): ask, hold, finish a round, hand on.

Protocol (one row per tenant; `requested` and `published` are counters, so no clock is compared
across machines, only each lease's own expiry):

1. `ask_for_refresh` counts the request and, when nobody holds the refresh (or the holder's lease
   lapsed), makes the caller the holder: it must publish a board read *after* this call.
2. The holder publishes, then `finish_round` records that the board covers the requests counted
   when its round began. Requests counted meanwhile keep the holder for another round (its lease
   renewed); otherwise the holder is released.
3. A holder that stops early (its round limit, an error) calls `hand_on`: the requests it did not
   cover stay counted (`requested > published`) for the next caller or `boards_behind`.
4. A run that ends while others of its tenant are in flight, shortly after a board was published
   (`may_defer`), only counts its request (`note_request`): in a burst the board is re-read and
   re-published every few seconds, not once per run, and the last run to end publishes it.

A request that finds the refresh held returns at once: the holder's next round reads what that
request's caller wrote (it committed before asking). Every statement is one short transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import JobBoardRefresh, ScheduledJob, ScheduledJobRun
from db.queries import dialect_insert

#: A job whose `next_run_at` passed less than this long ago counts as work about to end
#: (`may_defer`); one overdue for longer (its run missed: a worker down) does not.
DUE_WITHIN = timedelta(minutes=10)


@dataclass(frozen=True)
class RefreshTurn:
    """What `ask_for_refresh` decided.

    Attributes:
        holding: True when the caller now holds the refresh and must publish the board.
        requested: The requests counted so far; a board read from now on covers them.
    """

    holding: bool
    requested: int


def _table() -> sa.Table:
    return cast(sa.Table, JobBoardRefresh.__table__)


async def ask_for_refresh(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    holder: uuid.UUID,
    *,
    now: datetime,
    lease: timedelta,
) -> RefreshTurn:
    """Count one request for the tenant's board and take the refresh if nobody holds it.

    Args:
        session: Commit it before reading the board (the request must be visible to a holder
            elsewhere before this caller's read, or two processes could both skip it).
        holder: The caller's token (`uuid.uuid4()`, one per caller).
        now: The current time (UTC); the lease runs to `now + lease`.
        lease: How long the refresh stays held without `finish_round` renewing it.
    """
    table = _table()
    await note_request(session, tenant_id)
    taken = await session.scalar(
        sa.update(table)
        .where(
            table.c.tenant_id == tenant_id,
            sa.or_(table.c.holder.is_(None), table.c.lease_until < now),
        )
        .values(holder=holder, lease_until=now + lease)
        .returning(table.c.requested)
    )
    if taken is not None:
        return RefreshTurn(holding=True, requested=int(taken))
    requested = await session.scalar(
        sa.select(table.c.requested).where(table.c.tenant_id == tenant_id)
    )
    return RefreshTurn(holding=False, requested=int(requested or 0))


async def finish_round(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    holder: uuid.UUID,
    covered: int,
    *,
    now: datetime,
    lease: timedelta,
) -> int | None:
    """Record a published board that covers `covered` requests.

    Returns:
        The requests to cover in another round when more were counted meanwhile (the caller
        still holds the refresh, its lease renewed), or None when the caller no longer holds it
        (released because nothing is left, or its lease lapsed and another caller took over).
    """
    table = _table()
    mine = sa.and_(table.c.tenant_id == tenant_id, table.c.holder == holder)
    released = await session.scalar(
        sa.update(table)
        .where(mine, table.c.requested <= covered)
        .values(published=covered, published_at=now, holder=None, lease_until=None)
        .returning(table.c.requested)
    )
    if released is not None:
        return None
    more = await session.scalar(
        sa.update(table)
        .where(mine)
        .values(published=covered, published_at=now, lease_until=now + lease)
        .returning(table.c.requested)
    )
    return int(more) if more is not None else None


async def note_request(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Count one request for the tenant's board without publishing it (a later round, the next
    request that publishes, or `boards_behind`'s sweep covers it)."""
    table = _table()
    insert = dialect_insert(session)(table).values(tenant_id=tenant_id, requested=1)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.tenant_id], set_={"requested": table.c.requested + 1}
        )
    )


async def may_defer(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    flow_run_id: uuid.UUID,
    *,
    now: datetime,
    interval: timedelta,
) -> bool:
    """Whether a run that just ended may leave the board to others: a board was published less
    than `interval` ago and more of the tenant's work will end soon (each end asks again):
    another run of the tenant is pending or running, or one of its active jobs is due (its
    `next_run_at` passed less than `DUE_WITHIN` ago: in a burst, most of the due runs are still
    starting their processes and have no row yet). The last run of a burst to end finds neither,
    so the board's last version covers every run; during the burst it is at most `interval`
    behind."""
    table = _table()
    recent = await session.scalar(
        sa.select(table.c.published_at).where(
            table.c.tenant_id == tenant_id, table.c.published_at > now - interval
        )
    )
    if recent is None:
        return False
    running = (
        sa.select(ScheduledJobRun.id)
        .where(
            ScheduledJobRun.tenant_id == tenant_id,
            ScheduledJobRun.status.in_(("pending", "running")),
            ScheduledJobRun.flow_run_id != flow_run_id,
        )
        .limit(1)
    )
    due = (
        sa.select(ScheduledJob.id)
        .where(
            ScheduledJob.tenant_id == tenant_id,
            ScheduledJob.status == "active",
            ScheduledJob.deleted_at.is_(None),
            ScheduledJob.next_run_at <= now,
            ScheduledJob.next_run_at > now - DUE_WITHIN,
        )
        .limit(1)
    )
    return bool(await session.scalar(sa.select(sa.or_(running.exists(), due.exists()))))


async def hand_on(
    session: AsyncSession, tenant_id: uuid.UUID, holder: uuid.UUID, covered: int | None
) -> None:
    """Release the refresh without covering every request (`covered`: what the last published
    board covers, None when none was published); the rest stays counted as behind."""
    table = _table()
    values: dict[str, object] = {"holder": None, "lease_until": None}
    if covered is not None:
        values["published"] = covered
    await session.execute(
        sa.update(table)
        .where(table.c.tenant_id == tenant_id, table.c.holder == holder)
        .values(**values)
    )


async def boards_behind(
    session: AsyncSession, *, now: datetime, tenant_ids: Sequence[uuid.UUID] | None = None
) -> list[uuid.UUID]:
    """Tenants whose board misses requests and that nobody is refreshing (or whose holder's lease
    lapsed): what a sweep refreshes. `tenant_ids` limits the answer to those tenants."""
    table = _table()
    query = (
        sa.select(table.c.tenant_id)
        .where(
            table.c.requested > table.c.published,
            sa.or_(table.c.holder.is_(None), table.c.lease_until < now),
        )
        .order_by(table.c.tenant_id)
    )
    if tenant_ids is not None:
        query = query.where(table.c.tenant_id.in_(tenant_ids))
    return list((await session.scalars(query)).all())
