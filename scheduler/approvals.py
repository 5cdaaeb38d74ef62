"""SDK functions for approvals: list what waits, show one, decide it (tenant-scoped).

`decide` is the same decision the Prefect UI's resume form makes: it is checked against the
run's ads (`domain.approval.check_decision`), stored and submitted to Prefect through the
resume API in one step (`flows.approval.submit_decision`), so it happens once or not at all.

Errors are the project's own: `ApprovalNotFound` (no such run awaiting approval for this
tenant), `BadDecision` (names the field and what is allowed; nothing was written),
`DecisionConflict` (the run was already decided, or no longer waits).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from db.errors import NotFoundError
from db.models import RunApproval
from db.queries.approvals import AdForReview, ads_for_review, find_approval, list_approvals
from db.session import session_scope
from domain.approval import InvalidDecision, check_decision
from scheduler.errors import JobStateError, PrefectApiError


class ApprovalNotFound(NotFoundError):
    """No approval of that run for this tenant."""


# Both are bad input to the CLI (exit status 2): JobStateError is in its list.
class BadDecision(JobStateError):
    """The decision does not fit the run (message: field and what is allowed)."""


class DecisionConflict(JobStateError):
    """The run was already decided, or it no longer waits for a decision."""


@dataclass(frozen=True)
class ApprovalView:
    """One run's approval as the SDK and CLI show it.

    Attributes:
        flow_run_id: The Prefect flow run (what `decide` takes).
        job_run_id: The `scheduled_job_runs` row.
        job_name: The job's name.
        status: `awaiting`, `approved`, `rejected`, `partial` or `timed_out`.
        deadline_at: When `on_timeout` applies (UTC).
        on_timeout: `discard` or `export`.
        ads: The ads, in the order shown on the form (empty in listings).
        approved / rejected: The decided ad ids.
        note, decided_by, decided_via, decided_at: The decision's note and provenance.
    """

    flow_run_id: uuid.UUID
    job_run_id: uuid.UUID
    job_name: str
    status: str
    deadline_at: datetime
    on_timeout: str
    ads: tuple[AdForReview, ...]
    approved: tuple[uuid.UUID, ...]
    rejected: tuple[uuid.UUID, ...]
    note: str | None
    decided_by: str | None
    decided_via: str | None
    decided_at: datetime | None


def _view(row: RunApproval, job_name: str, ads: list[AdForReview] | None = None) -> ApprovalView:
    return ApprovalView(
        flow_run_id=row.flow_run_id,
        job_run_id=row.scheduled_job_run_id,
        job_name=job_name,
        status=row.status,
        deadline_at=row.deadline_at,
        on_timeout=row.on_timeout,
        ads=tuple(ads or ()),
        approved=tuple(row.approved_ad_ids or ()),
        rejected=tuple(row.rejected_ad_ids or ()),
        note=row.note,
        decided_by=row.decided_by,
        decided_via=row.decided_via,
        decided_at=row.decided_at,
    )


async def list_pending(
    tenant_id: uuid.UUID, *, database_url: str | None = None, include_decided: bool = False
) -> list[ApprovalView]:
    """The tenant's runs awaiting approval (or every approval), soonest deadline first."""
    async with session_scope(database_url) as session:
        rows = await list_approvals(
            session, tenant_id, status=None if include_decided else "awaiting"
        )
    return [_view(row, name) for row, name in rows]


async def show(
    tenant_id: uuid.UUID, run: uuid.UUID | str, *, database_url: str | None = None
) -> ApprovalView:
    """One run's approval with its ads (by flow run id or job run id).

    Raises:
        ApprovalNotFound: no approval of that run for this tenant.
    """
    run_id = _run_id(run)
    async with session_scope(database_url) as session:
        row = await find_approval(session, tenant_id, run_id)
        if row is None:
            raise ApprovalNotFound("approval of run", run_id)
        ads = await ads_for_review(session, row)
        from db.models import ScheduledJob

        job = await session.get(ScheduledJob, row.scheduled_job_id)
    return _view(row, job.name if job else "", ads)


async def decide(
    tenant_id: uuid.UUID,
    run: uuid.UUID | str,
    *,
    approve: Iterable[uuid.UUID | str] = (),
    reject: Iterable[uuid.UUID | str] = (),
    note: str = "",
    reviewer: str = "",
    database_url: str | None = None,
) -> ApprovalView:
    """Approve or reject every ad of a waiting run and resume it; returns the settled approval.

    Raises:
        ApprovalNotFound: no approval of that run for this tenant.
        BadDecision: an empty decision, an id of another run, an ad both approved and rejected,
            ads left undecided, a note over 2000 characters (nothing was written).
        DecisionConflict: the run was already decided or no longer waits.
    """
    from flows.approval import DecisionRefused, ResumeUnreachable, submit_decision

    view = await show(tenant_id, run, database_url=database_url)
    if view.status != "awaiting":
        raise DecisionConflict(
            f"run {view.flow_run_id} was already decided: {view.status}"
            + (f" via {view.decided_via}" if view.decided_via else "")
        )
    try:
        decision = check_decision(
            [a.id for a in view.ads], approve, reject, note=note, reviewer=reviewer
        )
    except InvalidDecision as exc:
        raise BadDecision(str(exc)) from None
    async with session_scope(database_url) as session:
        row = await find_approval(session, tenant_id, view.flow_run_id)
        assert row is not None
        approval_id = row.id
    try:
        await submit_decision(approval_id, decision, via="sdk", database_url=database_url)
    except DecisionRefused as exc:
        raise DecisionConflict(str(exc)) from None
    except ResumeUnreachable as exc:
        raise PrefectApiError(str(exc)) from None
    return await show(tenant_id, view.flow_run_id, database_url=database_url)


def _run_id(run: uuid.UUID | str) -> uuid.UUID:
    if isinstance(run, uuid.UUID):
        return run
    try:
        return uuid.UUID(str(run).strip())
    except ValueError:
        raise BadDecision(
            f"run: {str(run)[:60]!r} is not a run id; allowed: a flow run or job run UUID "
            "(see `ad-scheduler approvals list`)"
        ) from None
