"""The approval gate: a run with `approval.enabled` waits for a person before it exports.

Flow of one run (`run_scheduled_job`):

1. the ads are generated and recorded with their template usage, nothing is exported
   (the job's export is held back: `JobParameters.held_export`);
2. `request_approval` opens the run's approval row (`run_approvals`, the run's row becomes
   `awaiting_approval`), sends one "N ads waiting for approval" message to the job's Slack
   and/or email (thumbnails and the link to the run, never the ads' export itself) and
   suspends the flow run with `suspend_flow_run(wait_for_input=<form>, key="approval")`.
   Suspension ends the flow process: no worker slot or process waits for hours;
3. the decision arrives by the Prefect UI's resume form, by `ad-scheduler approvals decide`/the
   SDK, or by the timeout sweeper (`expire_approvals`); each resumes the flow run through the
   same API (`POST /flow_runs/{id}/resume` with `run_input`);
4. Prefect runs the flow function again from the start. `resume_decided_run`, called first,
   finds the approval row and takes over: it never generates or records usage again, reads the
   form input (the same suspend call returns it once its key has fired), settles the row once,
   exports exactly the approved ads and completes the run.

Why not Prefect's own suspend timeout: when it passes the server sets the run Failed ("paused and
never resumed") with no code of ours running, so `on_timeout: export` could not export and the
run would count as a failure. The deadline is ours (`run_approvals.deadline_at`), enforced by
`expire_approvals` (the `expire-approvals` deployment, every minute), which resumes the run with
the timeout's decision.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pydantic
import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.states import Completed, State

from blocks.storage import AdStorage, load_storage
from db.models import AdRun, GeneratedAd, RunApproval, ScheduledJob, ScheduledJobRun
from db.queries.approvals import (
    AdForReview,
    ads_for_review,
    approval_for_flow_run,
    expired_approvals,
    open_approval,
    settle_approval,
)
from db.session import session_scope
from db.types import utcnow
from domain import text as medium
from domain.approval import (
    Choice,
    Decision,
    InvalidDecision,
    check_decision,
    timeout_decision,
)
from domain.params import JobParameters
from flows.artifacts import await_run_artifact
from flows.history import was_suspended

logger = logging.getLogger("ad_scheduler.approval")

#: The suspend key: the same on every pass, so the re-run's suspend call returns the input.
PAUSE_KEY = "approval"
FORM_NAME = "AdApproval"


# --------------------------------------------------------------------------------------------
# The resume form


class ApprovalForm(RunInput):
    """Base of the resume form; `approval_form` adds one required choice per ad, then `note`
    and `reviewer` (after the ads: pydantic puts a base class's fields first, and the UI shows
    fields in schema order)."""

    @property
    def note_text(self) -> str:
        """The note (empty when none)."""
        return str(getattr(self, "note", "") or "")

    @property
    def reviewer_text(self) -> str:
        """Who decided, as typed (empty when not given)."""
        return str(getattr(self, "reviewer", "") or "")


def form_field(index: int) -> str:
    """The form field of the `index`-th ad (0-based): `ad_1`, `ad_2`, …"""
    return f"ad_{index + 1}"


def approval_form(ads: list[AdForReview], description: str = "") -> type[ApprovalForm]:
    """The resume form for these ads: one required approve/reject choice per ad (no default).

    The field order is the ads' order, so the same ads always give the same form (the resumed
    run rebuilds it to read the input).
    """
    fields: dict[str, Any] = {}
    for index, ad in enumerate(ads):
        fields[form_field(index)] = (
            Choice,
            pydantic.Field(
                title=f"Ad {index + 1}: {medium.single_line(ad.headline)[:80] or ad.template}",
                description=f"Template {ad.template}, variation {ad.variation_index + 1}",
            ),
        )
    fields["note"] = (str, pydantic.Field(default="", max_length=2000, title="Note"))
    fields["reviewer"] = (
        str,
        pydantic.Field(default="", max_length=200, title="Reviewer", description="Your name."),
    )
    model = pydantic.create_model(FORM_NAME, __base__=ApprovalForm, **fields)
    if description:
        model._description = description  # shown as markdown above the form by the Prefect UI
    return model


def form_values(ads: list[uuid.UUID], decision: Decision) -> dict[str, Any]:
    """The `run_input` a decision submits (what the UI form would send)."""
    approved = set(decision.approved)
    values: dict[str, Any] = {
        form_field(i): ("approve" if ad in approved else "reject") for i, ad in enumerate(ads)
    }
    values["note"] = decision.note
    values["reviewer"] = decision.reviewer
    return values


def decision_from_form(ads: list[uuid.UUID], form: ApprovalForm) -> Decision:
    """The decision a submitted form makes (raises `InvalidDecision` when a choice is missing)."""
    values = form.model_dump()
    approve = [ad for i, ad in enumerate(ads) if values.get(form_field(i)) == "approve"]
    reject = [ad for i, ad in enumerate(ads) if values.get(form_field(i)) == "reject"]
    return check_decision(ads, approve, reject, note=form.note_text, reviewer=form.reviewer_text)


async def thumbnail_uri(storage: AdStorage, path: str) -> str | None:
    """A small JPEG of a stored ad as a data URI (renders without a public URL), or None."""
    from flows.approval_notice import thumbnail_jpeg

    try:
        small = await thumbnail_jpeg(storage, path)
    except Exception as exc:  # a missing picture must not stop the approval
        logger.warning("no thumbnail for %s (%s)", path, type(exc).__name__)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(small).decode("ascii")


def review_markdown(title: str, ads: list[AdForReview], thumbs: dict[uuid.UUID, str | None]) -> str:
    """Markdown shown above the resume form: each ad's picture, headline, template and field."""
    lines = [
        f"## {medium.markdown_heading_text(title)}: {len(ads)} ads waiting for approval",
        "",
        "Choose **approve** or **reject** for every ad below; only approved ads are exported.",
        "",
        "| Field | Ad | Headline | Template |",
        "| --- | --- | --- | --- |",
    ]
    for index, ad in enumerate(ads):
        thumb = thumbs.get(ad.id)
        picture = (
            f"![ad {index + 1}]({thumb})" if thumb else medium.markdown_code_cell(ad.storage_path)
        )
        lines.append(
            f"| `{form_field(index)}` | {picture} | {medium.markdown_cell(ad.headline)} | "
            f"{medium.markdown_code_cell(ad.template)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Before: suspend


async def request_approval(job: ScheduledJob, params: JobParameters, job_run_id: uuid.UUID) -> None:
    """Open the run's approval, announce it, and suspend the flow run (the process exits).

    Does nothing when the job has no approval or the run made no ads. Raises Prefect's `Pause`
    (through `suspend_flow_run`) when it suspends.
    """
    approval_settings = params.approval
    if not approval_settings.enabled:
        return
    from prefect.context import get_run_context

    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    assert flow_run is not None
    async with session_scope() as session:
        job_run = await session.get_one(ScheduledJobRun, job_run_id)
        ad_ids = list(
            (
                await session.scalars(
                    sa.select(GeneratedAd.id)
                    .join(AdRun, AdRun.id == GeneratedAd.ad_run_id)
                    .where(AdRun.scheduled_job_run_id == job_run_id, AdRun.status == "completed")
                    .order_by(AdRun.template_storage_name, GeneratedAd.variation_index)
                )
            ).all()
        )
        if not ad_ids:
            return
        existed = await approval_for_flow_run(session, flow_run.id) is not None
        approval = await open_approval(
            session,
            job_run=job_run,
            flow_run_id=flow_run.id,
            ad_ids=ad_ids,
            deadline_at=utcnow() + timedelta(seconds=approval_settings.timeout_seconds),
            on_timeout=approval_settings.on_timeout,
        )
        ads = await ads_for_review(session, approval)
    if not existed:
        # A waiting run counts toward max_runs already (db/queries/job_runs.derive_job_state).
        from flows.history import rederive_job

        try:
            await rederive_job(job.id)
        except Exception as exc:  # the reconciler derives it again; the approval goes on
            get_run_logger().warning("job counters: %s", type(exc).__name__)
    storage = await load_storage()
    thumbs = dict(
        zip(
            [a.id for a in ads],
            await asyncio.gather(*[thumbnail_uri(storage, a.storage_path) for a in ads]),
            strict=True,
        )
    )
    form = approval_form(ads, review_markdown(job.name, ads, thumbs))
    run_logger = get_run_logger()
    run_logger.info(
        "%d ads wait for approval until %s (then: %s)",
        len(ads),
        approval.deadline_at.isoformat(timespec="minutes"),
        approval.on_timeout,
    )
    if not existed:
        from flows.approval_notice import announce_waiting

        await announce_waiting(job, params.export, flow_run.id, ads, storage)
    # The run's artifact is published now, before the process exits: no final-state hook runs
    # on a suspension.
    await await_run_artifact(flow_run.id)
    # No Prefect timeout: ours applies `on_timeout` (see the module docstring).
    await suspend_flow_run(wait_for_input=form, key=PAUSE_KEY)  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# After: resume


async def resume_decided_run(job: ScheduledJob, params: JobParameters) -> State | None:
    """Finish a run that is back from approval; None when this run has no approval (go on).

    Reads the decision (the form input via the same suspend call, or the one the SDK/CLI or
    the timeout already stored), settles it once, exports exactly the approved ads (once:
    deliveries are recorded per ad run and channel), publishes the decision artifact and returns
    the run's final state. Never generates ads or records usage again.
    """
    from prefect.context import get_run_context

    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    assert flow_run is not None
    if not was_suspended(flow_run):
        return None  # no approval of its own yet, and no query on the way to its first template
    async with session_scope() as session:
        approval = await approval_for_flow_run(session, flow_run.id)
        if approval is None:
            return None
        ads = await ads_for_review(session, approval)
    run_logger = get_run_logger()
    if approval.status == "awaiting":
        form_type = approval_form(ads)
        # The key has fired: Prefect rejects the second suspension and returns the input.
        form = await suspend_flow_run(wait_for_input=form_type, key=PAUSE_KEY)  # type: ignore[misc]
        try:
            decision = decision_from_form(approval.ad_ids, form)
        except (InvalidDecision, pydantic.ValidationError) as exc:
            raise InvalidDecision(
                "decision", f"the resume input is not a decision: {exc}"
            ) from None
        async with session_scope() as session:
            await settle_approval(session, approval.id, decision, via="ui")
    beat = asyncio.create_task(_heartbeat(approval.scheduled_job_run_id))
    try:
        summary = await finish_decision(job, params, approval.id, ads)
    finally:
        beat.cancel()
    run_logger.info("approval: %s", summary)
    return Completed(message=f"approval: {summary}")


async def finish_decision(
    job: ScheduledJob,
    params: JobParameters,
    approval_id: uuid.UUID,
    ads: list[AdForReview],
    *,
    run_status: str | None = None,
) -> str:
    """Export a decided approval's approved ads, note the decision on the run; its summary.

    Safe to repeat: deliveries are recorded per ad run and channel, and the note is written
    once. `run_status` also sets the run row's status (for a run Prefect ended before it could).
    """
    async with session_scope() as session:
        approval = await session.get_one(RunApproval, approval_id, populate_existing=True)
    summary = describe(approval)
    await _export_approved(job, params, approval)
    async with session_scope() as session:
        await session.execute(
            sa.update(RunApproval)
            .where(RunApproval.id == approval.id, RunApproval.exported_at.is_(None))
            .values(exported_at=utcnow())
        )
        run = await session.get_one(ScheduledJobRun, approval.scheduled_job_run_id)
        if "approval:" not in (run.logs or ""):
            run.logs = "; ".join(p for p in (run.logs, f"approval: {summary}") if p)[:10_000]
        if run_status is not None:
            run.status, run.skip_reason = run_status, None
            run.completed_at = run.completed_at or utcnow()
    await _publish_decision(job.name, approval, ads)
    return summary


async def _heartbeat(job_run_id: uuid.UUID) -> None:
    """Touch the running row while the resumed run exports (the reconciler's liveness signal)."""
    from config import get_settings

    while True:
        await asyncio.sleep(get_settings().run_heartbeat_seconds)
        try:
            async with session_scope() as session:
                await session.execute(
                    sa.update(ScheduledJobRun)
                    .where(ScheduledJobRun.id == job_run_id, ScheduledJobRun.status == "running")
                    .values(updated_at=utcnow())
                )
        except Exception as exc:  # a missed beat is not worth failing the run for
            get_run_logger().warning("run heartbeat failed: %s", type(exc).__name__)


def describe(approval: RunApproval) -> str:
    """One line: the outcome, counts, who, via what, and the note."""
    approved = len(approval.approved_ad_ids or [])
    rejected = len(approval.rejected_ad_ids or [])
    parts = [f"{approval.status}: {approved} approved, {rejected} rejected"]
    who = approval.decided_by or "someone"
    parts.append(f"by {who} via {approval.decided_via}")
    if approval.decided_at:
        parts.append(f"at {approval.decided_at.isoformat(timespec='seconds')}")
    text = " ".join(parts)
    if approval.note:
        text += f" — {medium.single_line(approval.note)[:300]}"
    return text


async def _export_approved(job: ScheduledJob, params: JobParameters, approval: RunApproval) -> None:
    approved = set(approval.approved_ad_ids or [])
    if not approved or params.export.destination == "none":
        return
    from flows.pipeline import AdRunOutcome, AdSummary, RunPlan, export_outcomes

    async with session_scope() as session:
        rows = (
            await session.execute(
                sa.select(GeneratedAd, AdRun.template_storage_name)
                .join(AdRun, AdRun.id == GeneratedAd.ad_run_id)
                .where(GeneratedAd.id.in_(list(approved)))
                .order_by(AdRun.template_storage_name, GeneratedAd.variation_index)
            )
        ).all()
    # The export works from the outcomes it is given: only the approved ads are in them.
    by_run: dict[uuid.UUID, AdRunOutcome] = {}
    for ad, template in rows:
        outcome = by_run.setdefault(
            ad.ad_run_id, AdRunOutcome(ad_run_id=ad.ad_run_id, template=str(template), ok=True)
        )
        outcome.ads.append(AdSummary(storage_path=ad.storage_path, headline=ad.headline))
    outcomes = list(by_run.values())
    plan = RunPlan(
        tenant_id=job.tenant_id,
        product_id=job.product_id,
        flow_run_id=approval.flow_run_id,
        templates=[o.template for o in outcomes],
        ad=params.ad,
        export=params.export,
        job_id=job.id,
        job_run_id=approval.scheduled_job_run_id,
    )
    await export_outcomes(plan, outcomes)


async def _publish_decision(title: str, approval: RunApproval, ads: list[AdForReview]) -> None:
    approved = set(approval.approved_ad_ids or [])
    lines = [
        f"## Approval: {medium.markdown_heading_text(title)}",
        "",
        medium.markdown_cell(describe(approval), limit=1000),
        "",
        "| Ad id | Template | Headline | Decision |",
        "| --- | --- | --- | --- |",
    ]
    for ad in ads:
        verdict = "✅ approved" if ad.id in approved else "🚫 rejected"
        lines.append(
            f"| `{ad.id}` | {medium.markdown_code_cell(ad.template)} | "
            f"{medium.markdown_cell(ad.headline)} | {verdict} |"
        )
    try:
        await acreate_markdown_artifact(
            markdown="\n".join(lines),
            key="approval-decision",
            description=f"Approval decision for {medium.single_line(title)}",
        )
    except Exception as exc:  # cosmetic: never fail a decided run over its artifact
        get_run_logger().warning("approval artifact: %s", type(exc).__name__)


# --------------------------------------------------------------------------------------------
# Deciding from outside (SDK/CLI and the timeout)


class DecisionRefused(Exception):
    """Prefect refused to resume the run (it is not waiting any more); nothing was stored."""


class ResumeUnreachable(Exception):
    """Prefect could not be asked to resume the run (unreachable, or an API error); nothing
    was stored."""


async def submit_decision(
    approval_id: uuid.UUID, decision: Decision, *, via: str, database_url: str | None = None
) -> None:
    """Store the decision and resume the flow run, atomically: both happen or neither.

    The row is settled inside a transaction that commits only once Prefect accepted the resume
    (the same `POST /flow_runs/{id}/resume` the UI's form sends, with the same `run_input`); a
    refused resume rolls the row back.

    Raises:
        DecisionRefused: already decided (here or in the UI), or the run no longer waits.
        ResumeUnreachable: the resume request itself failed (Prefect unreachable).
    """
    timed_out = via == "timeout"
    async with session_scope(database_url) as session:
        approval = await session.get_one(RunApproval, approval_id, with_for_update=True)
        if not await settle_approval(session, approval_id, decision, via=via, timed_out=timed_out):
            raise DecisionRefused(
                f"run {approval.flow_run_id} was already decided ({approval.status})"
            )
        async with get_client() as client:
            try:
                result = await client.resume_flow_run(
                    approval.flow_run_id, run_input=form_values(approval.ad_ids, decision)
                )
            except Exception as exc:
                raise ResumeUnreachable(
                    f"could not ask Prefect to resume run {approval.flow_run_id} "
                    f"({type(exc).__name__}); nothing was stored, try again"
                ) from None
        if result.status != SetStateStatus.ACCEPT:
            reason = getattr(result.details, "reason", "") or result.status.value
            raise DecisionRefused(
                f"run {approval.flow_run_id} is not waiting for a decision any more: {reason}"
            )


@flow(name="expire-approvals", log_prints=False)
async def expire_approvals(now_offset_seconds: int = 0) -> int:
    """Apply `on_timeout` to every approval whose deadline passed; returns how many.

    Args:
        now_offset_seconds: Act as if it were this many seconds later (tests, dry drills).
    """
    now = utcnow() + timedelta(seconds=now_offset_seconds)
    async with session_scope() as session:
        due = await expired_approvals(session, now)
    done = await _finish_stranded(now)
    for approval in due:
        waited = medium.single_line(_human(approval.deadline_at - approval.requested_at))
        decision = timeout_decision(approval.ad_ids, approval.on_timeout, waited)  # type: ignore[arg-type]
        try:
            await submit_decision(approval.id, decision, via="timeout")
            done += 1
        except (DecisionRefused, ResumeUnreachable) as exc:
            logger.info("timeout of %s not applied: %s", approval.flow_run_id, exc)
    return done


#: `decided_via` of an approval whose run ended (cancelled by a person) before any decision.
RUN_ENDED = "run_ended"
#: A decided run whose flow run ended without exporting gets this long to do it itself.
STRANDED_AFTER = timedelta(minutes=2)


async def _finish_stranded(now: datetime) -> int:
    """Finish decisions whose resumed run Prefect ended before it ran; returns how many.

    A decision can arrive while the job's next run holds the deployment's only concurrency
    slot: with `overlap: skip` (CANCEL_NEW) Prefect then cancels the resumed run before its flow
    starts. The decision stands, so its approved ads are exported here (a UI decision is read
    from the run's stored input first) and the run is recorded completed.
    """
    from prefect.input.actions import read_flow_run_input

    async with session_scope() as session:
        candidates = list(
            (
                await session.scalars(
                    sa.select(RunApproval).where(
                        RunApproval.exported_at.is_(None),
                        RunApproval.requested_at <= now - STRANDED_AFTER,
                    )
                )
            ).all()
        )
    finished = 0
    async with get_client() as client:
        for approval in candidates:
            try:
                run = await client.read_flow_run(approval.flow_run_id)
            except Exception:
                continue
            if run.state is None or not run.state.is_final() or run.state.is_completed():
                continue
            async with session_scope() as session:
                ads = await ads_for_review(session, approval)
                job = await session.get_one(ScheduledJob, approval.scheduled_job_id)
            run_status: str | None = "completed"
            if approval.status == "awaiting":
                raw = await read_flow_run_input(
                    key=f"suspended-{PAUSE_KEY}-response", flow_run_id=approval.flow_run_id
                )
                if raw:
                    decision = decision_from_form(approval.ad_ids, approval_form(ads)(**raw))
                    via = "ui"
                else:
                    # Ended undecided (a person cancelled the waiting run): nothing ships, and
                    # the approval stops waiting (no timeout will try to resume it).
                    decision = Decision(
                        approved=(),
                        rejected=tuple(approval.ad_ids),
                        note=f"the run ended {run.state.name} before a decision: nothing exported",
                    )
                    via, run_status = RUN_ENDED, None
                async with session_scope() as session:
                    await settle_approval(session, approval.id, decision, via=via)
            params = JobParameters.model_validate(job.parameters)
            summary = await finish_decision(job, params, approval.id, ads, run_status=run_status)
            logger.info("finished stranded decision of %s: %s", approval.flow_run_id, summary)
            finished += 1
    return finished


def _human(delta: timedelta) -> str:
    from domain.approval import format_duration

    return format_duration(int(delta.total_seconds()))
