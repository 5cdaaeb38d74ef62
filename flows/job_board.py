"""The job board: one keyed markdown artifact per tenant that shows every live job.

It is the old scheduler page's list view, inside the Prefect UI (Artifacts → `job-board-<tenant>`):
brand, product, job (a link to its deployment), status with its pause note, schedule in the job's
own time zone, runs done / max, next run, the last run's status with its whole reason, and the
latest ads as thumbnails; then, per product, how many templates it has used and has left.

It is refreshed after every change (the SDK calls `refresh_job_board_quietly`) and after every
run (`refresh_board_after_run`, a final-state hook of `run-scheduled-job`). Each refresh is a new
version of the same key, so the Artifacts page shows one card per tenant with the latest on top.

The artifact belongs to no flow run (created through the client, not `create_markdown_artifact`),
so it does not clutter the runs' own Artifacts tabs.

Bounds: thumbnails of `BOARD_THUMBNAIL_WIDTH` px and at most `BOARD_THUMBNAIL_MAX_BYTES` each,
at most `db.queries.board.ADS_PER_JOB` per job and `BOARD_MAX_BYTES` of thumbnails per board;
past that an ad is a link (storage with a public URL) or its storage path, and the board says so.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate

from blocks.storage import AdStorage
from db.queries.board import Board, BoardJob, BoardRun, read_board
from domain import text as medium
from flows.artifacts import ad_picture_cell, thumbnails_note
from flows.pipeline import AdSummary
from flows.thumbnails import Thumbnails, make_thumbnails

logger = logging.getLogger(__name__)

#: Longest side of a board thumbnail, in pixels.
BOARD_THUMBNAIL_WIDTH = 64
#: Largest data URI of one board thumbnail, in bytes (a 64 px JPEG is ~2-3 KB).
BOARD_THUMBNAIL_MAX_BYTES = 8_000
#: Largest total of thumbnail data URIs on one board, in bytes (~300 thumbnails of 64 px).
BOARD_MAX_BYTES = 800_000
#: The whole reason a run failed is shown, up to this many characters (a safety bound only).
REASON_MAX = 4_000

#: Only marks every browser font has (a paused or skipped mark showed as a box in Chromium).
_RUN_ICONS = {"completed": "✅", "failed": "❌"}


def board_key(tenant_id: uuid.UUID) -> str:
    """The artifact key of a tenant's board (lowercase letters, digits and dashes)."""
    return f"job-board-{tenant_id}"


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return UTC


def _when(moment: datetime | None, zone: str) -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(_zone(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _status_cell(job: BoardJob) -> str:
    cell = f"**{job.status}**"
    if job.pause_note:
        cell += "<br>" + medium.markdown_cell(job.pause_note, limit=REASON_MAX)
    return cell


def _schedule_cell(job: BoardJob) -> str:
    zone = medium.markdown_cell(job.timezone)
    if job.schedule_type == "one_time":
        when = f"once at {_when(job.scheduled_at, job.timezone)}"
    else:
        when = f"{medium.markdown_code_cell(job.cron_expression or '')} {zone}"
    # A paused or completed job has no next run, whatever the row last said.
    upcoming = _when(job.next_run_at, job.timezone) if job.status == "active" else "—"
    return f"{when}<br>next: {upcoming}"


def _runs_cell(job: BoardJob) -> str:
    return f"{job.runs_completed} / {job.max_runs if job.max_runs else '∞'}"


def _last_run_cell(run: BoardRun | None, zone: str) -> str:
    if run is None:
        return "no run yet"
    status = run.status or "pending"
    parts = [f"{_RUN_ICONS.get(status, '')} {status}".strip()]
    if run.prefect_state and run.prefect_state.lower() != status:
        parts[0] += f" ({medium.markdown_cell(run.prefect_state)})"
    parts.append(_when(run.started_at or run.completed_at, zone))
    if run.trigger == "manual":
        parts.append("manual run")
    if run.error_message:
        parts.append(medium.markdown_cell(run.error_message, limit=REASON_MAX))
    elif run.skip_reason and run.logs:
        parts.append(medium.markdown_cell(run.logs, limit=REASON_MAX))
    return "<br>".join(parts)


def _job_cell(job: BoardJob) -> str:
    name = medium.markdown_cell(job.name)
    if job.prefect_deployment_id is not None:
        # Same origin as the UI showing the board: a relative link opens the deployment page.
        name = f'<a href="/deployments/deployment/{job.prefect_deployment_id}">{name}</a>'
    where = f"{medium.markdown_cell(job.brand)} · {medium.markdown_cell(job.product)}"
    return f"**{name}**<br>{where}<br>templates: {medium.markdown_cell(job.template_mode)}"


def _ads_cell(job: BoardJob, thumbs: Thumbnails, storage: AdStorage | None) -> str:
    if not job.latest_ads:
        return "—"
    cells = []
    for ad in job.latest_ads:
        summary = AdSummary(
            storage_path=ad.storage_path,
            headline=ad.headline,
            url=storage.public_url(ad.storage_path) if storage else None,
        )
        cells.append(
            ad_picture_cell(summary, thumbs.uris.get(ad.storage_path), width=BOARD_THUMBNAIL_WIDTH)
        )
    more = job.latest_ads_total - len(job.latest_ads)
    tail = f"<br>+{more} more" if more > 0 else ""
    when = _when(job.latest_ads_run_at, job.timezone)
    return " ".join(cells) + f"<br>run of {when}" + tail


def render_board_markdown(
    board: Board,
    thumbnails: Thumbnails | None = None,
    *,
    storage: AdStorage | None = None,
    now: datetime | None = None,
) -> str:
    """Markdown of a tenant's board.

    Args:
        board: What `db.queries.board.read_board` read.
        thumbnails: Pictures by storage path (ads without one are links or paths).
        storage: Gives public URLs for links to the full ads, when it has them.
        now: The time shown as "updated" (default: now).
    """
    thumbs = thumbnails or Thumbnails(uris={})
    updated = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"## Job board: {len(board.jobs)} job{'' if len(board.jobs) == 1 else 's'}",
        "",
        f"Updated {updated}, after every change and every run. Times are in each job's own "
        "time zone.",
        "",
    ]
    if board.jobs:
        lines += [
            # The pictures come second: the UI scrolls a wide table sideways, and they are what
            # people look for first.
            "| Job | Latest ads | Status | Runs done / max | Schedule | Last run |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for job in board.jobs:
            cells = [
                _job_cell(job),
                _ads_cell(job, thumbs, storage),
                _status_cell(job),
                _runs_cell(job),
                _schedule_cell(job),
                _last_run_cell(job.last_run, job.timezone),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No jobs yet: create one with `ad-scheduler jobs create`.")
    lines += ["", "### Templates per product", ""]
    if board.products:
        lines += ["| Brand | Product | Used | Unused |", "| --- | --- | --- | --- |"]
        for p in board.products:
            lines.append(
                f"| {medium.markdown_cell(p.brand)} | {medium.markdown_cell(p.product)} | "
                f"{p.used} | {p.unused} |"
            )
    else:
        lines.append("No products yet.")
    note = thumbnails_note(thumbs, budget=BOARD_MAX_BYTES)
    if note:
        lines += ["", note]
    return "\n".join(lines)


async def refresh_job_board(
    tenant_id: uuid.UUID, storage: AdStorage | None = None, *, database_url: str | None = None
) -> uuid.UUID:
    """Read the tenant's board and publish it as a new version of its key.

    Args:
        tenant_id: Whose board.
        storage: Where the ads are; None loads the configured storage.
        database_url: The app database; None: the configured one.

    Returns:
        The new artifact's id.

    Raises:
        Whatever reading the database or calling the Prefect API raises (see
        `refresh_job_board_quietly` for callers that must not fail on it).
    """
    from blocks.storage import load_storage
    from db.session import session_scope

    async with session_scope(database_url) as session:
        board = await read_board(session, tenant_id)
    if storage is None:
        storage = await load_storage()
    paths = [ad.storage_path for job in board.jobs for ad in job.latest_ads]
    thumbs = await make_thumbnails(
        storage,
        paths,
        size=BOARD_THUMBNAIL_WIDTH,
        max_bytes=BOARD_THUMBNAIL_MAX_BYTES,
        budget=BOARD_MAX_BYTES,
    )
    markdown = render_board_markdown(board, thumbs, storage=storage)
    async with get_client() as client:
        artifact = await client.create_artifact(
            ArtifactCreate(
                key=board_key(tenant_id),
                type="markdown",
                data=markdown,
                description=f"Every job of tenant {tenant_id}: status, runs, latest ads.",
            )
        )
    return artifact.id


async def refresh_job_board_quietly(
    tenant_id: uuid.UUID, *, database_url: str | None = None
) -> uuid.UUID | None:
    """`refresh_job_board`, logging instead of raising: a board that could not be refreshed
    must never fail the change or the run that asked for it (the next refresh catches up).

    Returns:
        The new artifact's id, or None when the refresh failed (only the error's type is
        logged: driver messages can carry connection details).
    """
    try:
        return await refresh_job_board(tenant_id, database_url=database_url)
    except Exception as exc:
        logger.warning("job board of tenant %s not refreshed (%s)", tenant_id, type(exc).__name__)
        return None


# Prefect calls hooks with keyword arguments: the names must be exactly these.
async def refresh_board_after_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Final-state hook of `run-scheduled-job`: refresh the board of the run's job's tenant.

    Listed after the mirror hook (`flows.history.on_state_change`), so the board shows the
    run's final status. Never raises.
    """
    from db.models import ScheduledJob
    from db.session import session_scope

    try:
        job_id = uuid.UUID(str((flow_run.parameters or {})["job_id"]))
        async with session_scope() as session:
            job = await session.get(ScheduledJob, job_id)
        tenant_id = job.tenant_id if job is not None else None
    except Exception as exc:
        logger.warning("job board not refreshed after run (%s)", type(exc).__name__)
        return
    if tenant_id is not None:
        await refresh_job_board_quietly(tenant_id)
