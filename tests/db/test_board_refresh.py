"""The coalescing protocol of job board refreshes (`db.queries.board_refresh`), on both databases:
one holder at a time, requests counted while it publishes keep it for another round, a holder
that hands on or dies leaves the board listed as behind, and a lapsed holder cannot finish."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from db.queries.board_refresh import ask_for_refresh, boards_behind, finish_round, hand_on
from db.session import session_scope

LEASE = timedelta(seconds=60)


async def _ask(db_url: str, tenant: uuid.UUID, holder: uuid.UUID, now: datetime):
    async with session_scope(db_url) as s:
        return await ask_for_refresh(s, tenant, holder, now=now, lease=LEASE)


async def _finish(db_url: str, tenant: uuid.UUID, holder: uuid.UUID, covered: int, now: datetime):
    async with session_scope(db_url) as s:
        return await finish_round(s, tenant, holder, covered, now=now, lease=LEASE)


async def _behind(db_url: str, now: datetime, tenant: uuid.UUID) -> bool:
    """Whether `tenant` is listed behind (the database is shared with other tests)."""
    async with session_scope(db_url) as s:
        return tenant in await boards_behind(s, now=now)


async def test_one_holder_folds_the_requests_made_while_it_publishes(db_url: str) -> None:
    tenant, now = uuid.uuid4(), datetime.now(UTC)
    a, b, c, d = (uuid.uuid4() for _ in range(4))

    first = await _ask(db_url, tenant, a, now)
    assert (first.holding, first.requested) == (True, 1)
    second = await _ask(db_url, tenant, b, now)  # while a publishes: counted, not held
    assert (second.holding, second.requested) == (False, 2)
    assert not await _behind(db_url, now, tenant)  # a holds it: nobody else has to

    # a's board covered request 1; request 2 came meanwhile: a goes again.
    assert await _finish(db_url, tenant, a, 1, now) == 2
    assert not (await _ask(db_url, tenant, c, now)).holding
    assert await _finish(db_url, tenant, a, 2, now) == 3
    # a stops at its round limit: request 3 is left uncovered, and listed.
    async with session_scope(db_url) as s:
        await hand_on(s, tenant, a, 2)
    assert await _behind(db_url, now, tenant)

    # The next request takes the refresh and, with nothing new meanwhile, is released.
    fourth = await _ask(db_url, tenant, d, now)
    assert (fourth.holding, fourth.requested) == (True, 4)
    assert await _finish(db_url, tenant, d, 4, now) is None
    assert not await _behind(db_url, now, tenant)
    holder = uuid.uuid4()
    last = await _ask(db_url, tenant, holder, now)
    assert last.holding  # free again
    assert await _finish(db_url, tenant, holder, last.requested, now) is None


async def test_a_holder_that_died_is_replaced_once_its_lease_lapses(db_url: str) -> None:
    tenant, now = uuid.uuid4(), datetime.now(UTC)
    dead, waiting, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert (await _ask(db_url, tenant, dead, now)).holding  # then its process is killed
    assert not (await _ask(db_url, tenant, waiting, now + LEASE / 2)).holding
    assert not await _behind(db_url, now + LEASE / 2, tenant)  # still within the dead one's lease
    lapsed = now + LEASE + timedelta(seconds=1)
    assert await _behind(db_url, lapsed, tenant)
    turn = await _ask(db_url, tenant, later, lapsed)
    assert (turn.holding, turn.requested) == (True, 3)
    # The dead holder, if it was only slow, can no longer finish or hand on a round.
    assert await _finish(db_url, tenant, dead, 1, lapsed) is None
    async with session_scope(db_url) as s:
        await hand_on(s, tenant, dead, 1)
    assert await _finish(db_url, tenant, later, 3, lapsed) is None
    assert not await _behind(db_url, lapsed, tenant)


async def test_tenants_are_independent(db_url: str) -> None:
    now = datetime.now(UTC)
    for tenant in (uuid.uuid4(), uuid.uuid4()):
        holder = uuid.uuid4()
        turn = await _ask(db_url, tenant, holder, now)
        assert (turn.holding, turn.requested) == (True, 1)
        assert await _finish(db_url, tenant, holder, 1, now) is None


async def test_a_run_ending_in_a_busy_burst_leaves_the_board_to_the_last_one(db_url: str) -> None:
    """`may_defer`: only while another run of the tenant is in flight and a board went out less
    than the interval ago; the deferred request is still counted (`note_request`)."""
    from db.models import ScheduledJob, ScheduledJobRun
    from db.queries.board_refresh import DUE_WITHIN, may_defer, note_request
    from tests.support.factories import make_job, make_product

    tenant, now, interval = uuid.uuid4(), datetime.now(UTC), timedelta(seconds=15)
    ending, other = uuid.uuid4(), uuid.uuid4()
    async with session_scope(db_url) as s:
        product = await make_product(s, tenant)
        job = await make_job(s, tenant, product, next_run_at=None)
        for flow_run_id, status in ((ending, "completed"), (other, "running")):
            s.add(
                ScheduledJobRun(
                    scheduled_job_id=job.id,
                    tenant_id=tenant,
                    status=status,
                    flow_run_id=flow_run_id,
                )
            )

    async def defer(at: datetime) -> bool:
        async with session_scope(db_url) as s:
            return await may_defer(s, tenant, ending, now=at, interval=interval)

    assert not await defer(now)  # no board published yet: publish
    holder = uuid.uuid4()
    turn = await _ask(db_url, tenant, holder, now)
    assert await _finish(db_url, tenant, holder, turn.requested, now) is None
    assert await defer(now + timedelta(seconds=5))  # another run in flight, a fresh board
    assert not await defer(now + interval + timedelta(seconds=1))  # the board is getting old
    async with session_scope(db_url) as s:
        await note_request(s, tenant)
    assert await _behind(db_url, now, tenant)  # counted: the next refresh or the sweep covers it

    async with session_scope(db_url) as s:  # the other run ends: the last one always publishes
        row = await s.scalar(sa.select(ScheduledJobRun).where(ScheduledJobRun.flow_run_id == other))
        assert row is not None
        row.status = "completed"
    assert not await defer(now + timedelta(seconds=5))

    # A job of the tenant due a moment ago whose run has no row yet (its process is starting,
    # as most of a burst's are) is work about to end too; one overdue for long is not.
    async with session_scope(db_url) as s:
        due = await make_job(
            s, tenant, product, next_run_at=now - timedelta(seconds=30), status="active"
        )
    assert await defer(now + timedelta(seconds=5))
    async with session_scope(db_url) as s:
        row = await s.get(ScheduledJob, due.id)
        assert row is not None
        row.next_run_at = now - DUE_WITHIN - timedelta(minutes=1)
    assert not await defer(now + timedelta(seconds=5))
    holder = uuid.uuid4()
    turn = await _ask(db_url, tenant, holder, now)
    assert await _finish(db_url, tenant, holder, turn.requested, now) is None
