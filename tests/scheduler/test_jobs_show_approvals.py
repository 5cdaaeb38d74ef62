"""`jobs show` and `runs` show each run's approval: its state, who decided, when, and the note.

Issue 14 item 3. Approval rows are written through the real store (`db.queries.approvals`:
`open_approval`, `settle_approval`), on real databases; no Prefect run is needed, because the
read path (`JobReader`) never touches Prefect.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from db.models import GeneratedAd, ScheduledJobRun
from db.queries.approvals import open_approval, settle_approval
from db.read_models import RunApprovalView
from db.session import dispose_engines, session_scope
from domain.approval import Decision
from scheduler import cli as cli_module
from scheduler.cli import app
from scheduler.commands.common import when
from scheduler.job_reads import JobReader
from tests.support.factories import make_ad_run, make_brand, make_job, make_product

runner = CliRunner()
TZ = "America/New_York"
#: A note a reviewer could type: markup, an ANSI colour sequence, a bidi override, a second line,
#: and more than any cut used elsewhere (80 in tables, 300 in artifacts).
NOTE = (
    "Logo too small on v2 [bold]fix[/bold] \x1b[31mred\u202eevil\r\n"
    "second line: " + "keep every word of this note " * 12 + "END"
)


@dataclass
class Seeded:
    """A job with five runs: awaiting, partial, rejected (UI), timed out → export, none."""

    tenant_id: uuid.UUID
    job_name: str
    other_job_name: str
    runs: dict[str, ScheduledJobRun]
    deadline: datetime


async def _seed(db_url: str, tenant_id: uuid.UUID) -> Seeded:
    base = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    deadline = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    kinds = ("awaiting", "partial", "ui_rejected", "timed_out", "plain")
    async with session_scope(db_url) as session:
        brand = await make_brand(session, tenant_id)
        product = await make_product(session, tenant_id, brand)
        job = await make_job(session, tenant_id, product, timezone=TZ)
        other = await make_job(session, tenant_id, product, timezone=TZ)
        runs: dict[str, ScheduledJobRun] = {}
        for index, kind in enumerate(kinds):
            flow_run_id = uuid.uuid4()
            run = ScheduledJobRun(
                scheduled_job_id=job.id,
                tenant_id=tenant_id,
                flow_run_id=flow_run_id,
                scheduled_for=base + timedelta(days=7 * index),
                trigger="schedule",
                status="completed",
            )
            session.add(run)
            await session.flush()
            runs[kind] = run
            if kind == "plain":
                continue
            ad_run = await make_ad_run(
                session, tenant_id, product, "tpl-0001.png", job_run=run, ads=3
            )
            ad_ids = await _ad_ids(session, ad_run.id)
            approval = await open_approval(
                session,
                job_run=run,
                flow_run_id=flow_run_id,
                ad_ids=ad_ids,
                deadline_at=deadline,
                on_timeout="export" if kind == "timed_out" else "discard",
            )
            if kind == "partial":
                decision = Decision(
                    approved=tuple(ad_ids[:2]), rejected=(ad_ids[2],), note=NOTE, reviewer="alice"
                )
                assert await settle_approval(session, approval.id, decision, via="sdk")
            elif kind == "ui_rejected":
                decision = Decision(approved=(), rejected=tuple(ad_ids))
                assert await settle_approval(session, approval.id, decision, via="ui")
            elif kind == "timed_out":
                decision = Decision(approved=tuple(ad_ids), rejected=())
                settled = await settle_approval(
                    session, approval.id, decision, via="timeout", timed_out=True
                )
                assert settled
    await dispose_engines()
    return Seeded(tenant_id, job.name, other.name, runs, deadline)


async def _ad_ids(session: AsyncSession, ad_run_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        sa.select(GeneratedAd.id)
        .where(GeneratedAd.ad_run_id == ad_run_id)
        .order_by(GeneratedAd.variation_index)
    )
    return list(rows.all())


async def _views(
    db_url: str, tenant: uuid.UUID, run_ids: list[uuid.UUID]
) -> dict[uuid.UUID, RunApprovalView]:
    try:
        return await JobReader(tenant, database_url=db_url).run_approvals(run_ids)
    finally:
        await dispose_engines()


@pytest.fixture
def seeded(db_url: str, use_database: str, tenant_id: uuid.UUID, data_dir: Path) -> Seeded:
    return asyncio.run(_seed(db_url, tenant_id))


def _cli(seeded: Seeded, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    # Wide enough that no cell wraps: each line of the note must appear whole.
    monkeypatch.setattr(cli_module.console, "width", 1000)
    result = runner.invoke(app, [*args, "--tenant", str(seeded.tenant_id)])
    assert result.exit_code == 0, result.output
    return str(result.output)


def _line_with(output: str, needle: str) -> str:
    lines = [line for line in output.splitlines() if needle in line]
    assert len(lines) == 1, (needle, output)
    return lines[0]


def test_the_reader_returns_each_runs_decision_for_this_tenant_only(
    db_url: str, seeded: Seeded
) -> None:
    run_ids = [run.id for run in seeded.runs.values()]
    views = asyncio.run(_views(db_url, seeded.tenant_id, run_ids))

    assert set(views) == {
        seeded.runs[k].id for k in ("awaiting", "partial", "ui_rejected", "timed_out")
    }
    partial = views[seeded.runs["partial"].id]
    assert (partial.status, partial.approved_count, partial.rejected_count) == ("partial", 2, 1)
    assert (partial.decided_by, partial.decided_via, partial.note) == ("alice", "sdk", NOTE)
    assert partial.decided_at is not None
    awaiting = views[seeded.runs["awaiting"].id]
    assert (awaiting.status, awaiting.decided_at, awaiting.deadline_at) == (
        "awaiting",
        None,
        seeded.deadline,
    )
    timed_out = views[seeded.runs["timed_out"].id]
    assert (timed_out.status, timed_out.on_timeout, timed_out.approved_count) == (
        "timed_out",
        "export",
        3,
    )
    # Another tenant asking for the same runs gets nothing.
    assert asyncio.run(_views(db_url, uuid.uuid4(), run_ids)) == {}


def test_jobs_show_lists_each_runs_approval_with_who_when_and_the_whole_note(
    db_url: str, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    views = asyncio.run(_views(db_url, seeded.tenant_id, [r.id for r in seeded.runs.values()]))
    for command in (("jobs", "show", seeded.job_name), ("runs", seeded.job_name)):
        out = _cli(seeded, monkeypatch, *command)
        assert f"approval decisions of {seeded.job_name}'s runs" in out

        awaiting = _line_with(out, str(seeded.runs["awaiting"].flow_run_id))
        assert "awaiting until 2026-12-01 09:00 EST, then discard" in awaiting

        partial_run = seeded.runs["partial"]
        partial = _line_with(out, str(partial_run.flow_run_id))
        decided_at = views[partial_run.id].decided_at
        assert "approved 2, rejected 1" in partial and "alice (via sdk)" in partial
        assert when(decided_at, TZ) in partial
        # The note, as written and whole: markup literal, control characters made visible.
        assert "Logo too small on v2 [bold]fix[/bold] \\x1b[31mred\\u202eevil" in partial
        assert _line_with(out, "second line: keep every word").rstrip(" │").endswith("END")
        assert NOTE.split("\r\n")[1] in out
        assert "\x1b[31m" not in out and "\u202e" not in out and "\r" not in out

        rejected = _line_with(out, str(seeded.runs["ui_rejected"].flow_run_id))
        assert "approved 0, rejected 3" in rejected and "(via ui)" in rejected

        timed_out = _line_with(out, str(seeded.runs["timed_out"].flow_run_id))
        assert "timed out → export (approved 3, rejected 0)" in timed_out
        assert "(via timeout)" in timed_out

        # The run without an approval is in the runs table only, marked "—".
        assert str(seeded.runs["plain"].flow_run_id) not in out
        plain = _line_with(out, when(seeded.runs["plain"].scheduled_for, TZ))
        assert "│ —" in plain


def test_a_job_without_approvals_shows_its_runs_as_before(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _cli(seeded, monkeypatch, "jobs", "show", seeded.other_job_name)
    assert f"runs of {seeded.other_job_name}" in out
    assert "Approval" not in out.split(f"runs of {seeded.other_job_name}")[1]
    assert "approval decisions" not in out
